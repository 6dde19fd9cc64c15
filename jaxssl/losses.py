"""Pure loss functions; each docstring gives the paper's equation.

Losses are written for the global batch: under a sharded `jax.jit`, reductions over the batch
axis span every device, so no explicit collectives are needed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps), computed in at least float32."""
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), eps * eps))


def normalized_regression(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """BYOL's per-example loss: ||norm(p) - norm(z)||^2 = 2 - 2 cos(p, z).

  Returns [B]. The caller decides where gradients stop (see `byol_loss`).
  """
  return jnp.sum((l2_normalize(prediction) - l2_normalize(target)) ** 2, axis=-1)


def byol_loss(online_predictions: tuple[jax.Array, jax.Array], target_projections: tuple[jax.Array, jax.Array]) -> jax.Array:
  """BYOL's symmetrised loss (Grill et al. 2020, eq. 2 and the L + L~ sum).

  L = mean_b [ 2 - 2 cos(q(v), sg(z'(v'))) ] + mean_b [ 2 - 2 cos(q(v'), sg(z'(v))) ]

  Args:
    online_predictions: (q1, q2), the online predictor outputs for views 1 and 2, each [B, D].
    target_projections: (z1, z2), the target projector outputs for views 1 and 2, each [B, D].
  Returns:
    A scalar in [0, 8].
  """
  q1, q2 = online_predictions
  # The target only ever receives gradients through the EMA, never through the loss; the
  # stop_gradient is implied by differentiating online parameters only, and kept to show intent.
  z1, z2 = (jax.lax.stop_gradient(z) for z in target_projections)
  return jnp.mean(normalized_regression(q1, z2)) + jnp.mean(normalized_regression(q2, z1))


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array, valid: jax.Array | None = None) -> jax.Array:
  """Mean cross-entropy over examples with `valid` True (labels < 0 mark unlabelled data)."""
  if valid is None:
    valid = labels >= 0
  log_probs = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)))
  picked = jnp.take_along_axis(log_probs, jnp.maximum(labels, 0)[:, None], axis=-1)[:, 0]
  weight = valid.astype(jnp.float32)
  return -jnp.sum(picked * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def brave_loss(
    narrow: tuple[jax.Array, jax.Array], broad: tuple[tuple[jax.Array, jax.Array], ...]
) -> jax.Array:
  """BraVe's symmetric regression between a narrow view and K broad views (Recasens et al. 2021, eq. 2-3).

  L = sum_k mean_b ||norm(h(g(f_n))) - sg(norm(g(f_b^k)))||^2 + ||norm(h(g(f_b^k))) - sg(norm(g(f_n)))||^2

  There is no target network: the stop-gradient falls on the projections of the SAME (online)
  networks, which is what makes it BraVe rather than BYOL.

  Args:
    narrow: (prediction h(g(f_n)), projection g(f_n)) of the narrow view, each [B, D].
    broad: one (prediction, projection) pair per broad view.
  Returns:
    A scalar in [0, 8K].
  """
  if not broad:
    raise ValueError("BraVe needs at least one broad view; add one to config.brave.broad_views.")
  narrow_prediction, narrow_projection = narrow
  total = 0.0
  for broad_prediction, broad_projection in broad:
    total += jnp.mean(normalized_regression(narrow_prediction, jax.lax.stop_gradient(broad_projection)))
    total += jnp.mean(normalized_regression(broad_prediction, jax.lax.stop_gradient(narrow_projection)))
  return total
