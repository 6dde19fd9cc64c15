"""MLP projector and predictor heads (Linear -> BN -> ReLU, repeated, then Linear)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx


class MLPHead(nnx.Module):
  """An MLP with BatchNorm and ReLU after every hidden layer, as in SimCLR/BYOL heads."""

  def __init__(
      self,
      in_features: int,
      hidden_features: int,
      out_features: int,
      *,
      num_hidden_layers: int = 1,
      output_batch_norm: bool = False,
      dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    layers = []
    features = in_features
    for _ in range(num_hidden_layers):
      layers.append(nnx.Linear(features, hidden_features, dtype=dtype, rngs=rngs))
      layers.append(nnx.BatchNorm(hidden_features, momentum=0.9, epsilon=1e-5, use_fast_variance=False, dtype=dtype, rngs=rngs))
      features = hidden_features
    self.hidden = nnx.List(layers)
    self.output = nnx.Linear(features, out_features, dtype=dtype, rngs=rngs)
    # MoCo v3 (after SimCLR's code) ends its heads with a BatchNorm without scale and offset.
    self.output_norm = (
        nnx.BatchNorm(
            out_features, use_scale=False, use_bias=False, momentum=0.9, epsilon=1e-5,
            use_fast_variance=False, dtype=dtype, rngs=rngs,
        )
        if output_batch_norm
        else None
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    for linear, norm in zip(self.hidden[::2], self.hidden[1::2]):
      x = nnx.relu(norm(linear(x)))
    x = self.output(x)
    if self.output_norm is not None:
      x = self.output_norm(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))  # bf16 -> f32, f64 stays
