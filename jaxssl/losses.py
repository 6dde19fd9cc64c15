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


def nt_xent_loss(z1: jax.Array, z2: jax.Array, temperature: float) -> jax.Array:
  """SimCLR's NT-Xent loss over the global batch (Chen et al. 2020, eq. 1 and algorithm 1).

  With u = norm(concat(z1, z2)) [2B, D] and s_ij = u_i . u_j / temperature, each of the 2B views
  has its other view as the positive and the 2B - 2 other views of the batch as negatives:

    L = 1 / 2B sum_i -log( exp(s_i,pos(i)) / sum_{j != i} exp(s_ij) ),  pos(i) = i +- B.

  Under a sharded `jax.jit` the 2B x 2B similarity matrix spans every device, so negatives are
  global without an explicit all-gather.

  Args:
    z1: projections of the first views [B, D].
    z2: projections of the second views [B, D].
    temperature: the softmax temperature tau.
  Returns:
    A scalar.
  """
  u = l2_normalize(jnp.concatenate([z1, z2], axis=0))
  batch = z1.shape[0]
  logits = u @ u.T / temperature
  # A view is never its own negative: its self-similarity is removed from the softmax.
  logits = jnp.where(jnp.eye(2 * batch, dtype=bool), -jnp.inf, logits)
  positives = jnp.concatenate([jnp.arange(batch, 2 * batch), jnp.arange(batch)])
  return softmax_cross_entropy(logits, positives)


def info_nce_loss(queries: jax.Array, keys: jax.Array, temperature: float) -> jax.Array:
  """InfoNCE with the batch as the dictionary: query i's positive is key i, the other keys are
  negatives (MoCo v3, Chen, Xie, He 2021, algorithm 1 `ctr`).

    L = mean_i -log( exp(q_i . k_i / tau) / sum_j exp(q_i . k_j / tau) ) * 2 tau,

  with q and k L2-normalised. The 2 tau factor (from the official code) makes the gradient's
  scale independent of tau. Keys come from the momentum encoder and get no gradient.
  """
  q = l2_normalize(queries)
  k = l2_normalize(jax.lax.stop_gradient(keys))
  logits = q @ k.T / temperature
  return softmax_cross_entropy(logits, jnp.arange(q.shape[0])) * (2.0 * temperature)


def moco_v3_loss(
    queries: tuple[jax.Array, jax.Array], keys: tuple[jax.Array, jax.Array], temperature: float
) -> jax.Array:
  """MoCo v3's symmetrised loss: ctr(q1, k2) + ctr(q2, k1) (Chen, Xie, He 2021, algorithm 1).

  Args:
    queries: (q1, q2), online predictor outputs for views 1 and 2, each [B, D].
    keys: (k1, k2), momentum-encoder projections for views 1 and 2, each [B, D].
    temperature: tau (0.2 for ViT, 1.0 for ResNet-50 in the paper).
  """
  q1, q2 = queries
  k1, k2 = keys
  return info_nce_loss(q1, k2, temperature) + info_nce_loss(q2, k1, temperature)
