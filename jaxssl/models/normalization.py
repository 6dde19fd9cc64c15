"""BatchNorm that can normalise several interleaved views, each by its own batch statistics.

BYOL, MoCo v3, Barlow Twins, VICReg and SimSiam normalise each augmented view by that view's
statistics, as their references do by running the network once per view. Under a sharded
`jax.jit` one pass per view costs one all-reduce of every weight's partial gradient per pass
(XLA does not merge `all-reduce(a) + all-reduce(b)` into `all-reduce(a + b)`). Running the views
as one interleaved batch, rows `[x1_0, x2_0, x1_1, x2_1, ...]`, gives every weight one gradient
and so one all-reduce, and keeps each device's rows on that device (its examples' views sit next
to each other). Only BatchNorm must know about the views: with `view_groups = G` it reads its
input as [B, G, ...] and normalises each of the G slices on its own, updating the running
averages after each slice in turn, exactly as G separate passes would.

`view_groups` is set per call (`functional.PureModule(..., views=G)`), never stored in a
checkpoint; a module built with plain `nnx.BatchNorm` refuses it (see `check_view_groups`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxssl.errors import UserError


class BatchNorm(nnx.BatchNorm):
  """`nnx.BatchNorm` with per-view statistics over interleaved views (module docstring)."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.view_groups = 1

  def __call__(self, x: jax.Array, use_running_average: bool | None = None, *, mask: jax.Array | None = None) -> jax.Array:
    groups = self.view_groups
    running = self.use_running_average if use_running_average is None else use_running_average
    if groups == 1 or running:
      return super().__call__(x, use_running_average, mask=mask)
    if mask is not None:
      raise ValueError("BatchNorm with view_groups > 1 takes no mask.")
    if x.shape[0] % groups:
      raise ValueError(f"a batch of {x.shape[0]} rows does not hold {groups} interleaved views.")
    per_view = x.reshape((x.shape[0] // groups, groups) + x.shape[1:])
    outputs = [super(BatchNorm, self).__call__(per_view[:, g], use_running_average) for g in range(groups)]
    return jnp.stack(outputs, axis=1).reshape(x.shape)


def batch_norm(features: int, *, dtype: Any = None, rngs: nnx.Rngs, zero_scale: bool = False, affine: bool = True) -> BatchNorm:
  """The project's BatchNorm: momentum 0.9 (PyTorch's 0.1), epsilon 1e-5 as in torchvision."""
  return BatchNorm(
      features,
      momentum=0.9,
      epsilon=1e-5,
      # Two-pass variance: E[x^2] - E[x]^2 cancels badly, most of all across devices or in bf16.
      use_fast_variance=False,
      use_scale=affine,
      use_bias=affine,
      dtype=dtype,
      scale_init=nnx.initializers.zeros if zero_scale else nnx.initializers.ones,
      rngs=rngs,
  )


def set_view_groups(module: nnx.Module, groups: int) -> None:
  """Makes every BatchNorm in `module` normalise `groups` interleaved views on their own."""
  for _, child in nnx.iter_graph(module):
    if isinstance(child, nnx.BatchNorm):
      if not isinstance(child, BatchNorm):
        raise UserError(
            f"{type(module).__name__} has a plain nnx.BatchNorm, which cannot keep per-view "
            "statistics over interleaved views; build it with jaxssl.models.normalization.batch_norm."
        )
      child.view_groups = groups


def interleave(views: tuple[jax.Array, ...] | list[jax.Array]) -> jax.Array:
  """[B, ...] per view -> [B * V, ...] with example i's views in rows i * V ... i * V + V - 1."""
  return jnp.stack(views, axis=1).reshape((-1,) + views[0].shape[1:])


def deinterleave(x: jax.Array, num_views: int) -> list[jax.Array]:
  """The inverse of `interleave`: a list of `num_views` arrays [B, ...]."""
  per_view = x.reshape((x.shape[0] // num_views, num_views) + x.shape[1:])
  return [per_view[:, v] for v in range(num_views)]
