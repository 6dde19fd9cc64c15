"""MLP projector and predictor heads (Linear -> BN -> ReLU, repeated, then Linear)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxssl.models.normalization import batch_norm


class MLPHead(nnx.Module):
  """An MLP with BatchNorm and ReLU after every hidden layer, as in SimCLR/BYOL heads."""

  def __init__(
      self,
      in_features: int,
      hidden_features: int,
      out_features: int,
      *,
      num_hidden_layers: int = 1,
      output_norm: bool = False,
      dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    layers = []
    features = in_features
    for _ in range(num_hidden_layers):
      layers.append(nnx.Linear(features, hidden_features, dtype=dtype, rngs=rngs))
      layers.append(batch_norm(hidden_features, dtype=dtype, rngs=rngs))
      features = hidden_features
    self.hidden = nnx.List(layers)
    self.output = nnx.Linear(features, out_features, dtype=dtype, rngs=rngs)
    # SimSiam's projector (Chen & He 2021, 4.2) and MoCo v3's heads end in a BatchNorm without
    # scale and offset.
    self.output_norm = (
        batch_norm(out_features, affine=False, dtype=dtype, rngs=rngs)
        if output_norm else None
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    for linear, norm in zip(self.hidden[::2], self.hidden[1::2]):
      x = nnx.relu(norm(linear(x)))
    x = self.output(x)
    if self.output_norm is not None:
      x = self.output_norm(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))  # bf16 -> f32, f64 stays


def dropout(rng: jax.Array | None, x: jax.Array, rate: float) -> jax.Array:
  """Inverted dropout (zero a `rate` fraction, scale the rest by 1 / (1 - rate)); identity without a key."""
  if rng is None or rate <= 0.0:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class GDTHead(nnx.Module):
  """GDT's projection head: Dropout -> Linear (no bias) -> BN -> ReLU -> Dropout -> Linear.

  The official `model.py:MLP` (dropout 0.3, 512 -> 512 -> 256); the caller L2-normalises the
  output. The hidden Linear has no bias because the BatchNorm after it would cancel one.
  Dropout is active only when a key is passed (training).
  """

  def __init__(self, in_features: int, hidden_features: int, out_features: int, *, dropout_rate: float = 0.3, dtype: Any = jnp.float32, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(in_features, hidden_features, use_bias=False, dtype=dtype, rngs=rngs)
    self.norm = batch_norm(hidden_features, dtype=dtype, rngs=rngs)
    self.output = nnx.Linear(hidden_features, out_features, dtype=dtype, rngs=rngs)
    self.dropout_rate = dropout_rate

  def __call__(self, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    keys = jax.random.split(rng) if rng is not None else (None, None)
    x = nnx.relu(self.norm(self.hidden(dropout(keys[0], x, self.dropout_rate))))
    x = self.output(dropout(keys[1], x, self.dropout_rate))
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


class DINOHead(nnx.Module):
  """DINO's projection MLP up to the bottleneck (Caron et al. 2021, sec. 3.1 and appendix).

  Linear -> [BN] -> GELU, `num_layers - 1` times, then Linear to `bottleneck_dim`; the output is
  L2-normalised by the caller before the weight-normalised last layer (`WeightNormLinear`), which
  is a separate module so that it can be frozen on its own in the first epoch.
  """

  def __init__(
      self,
      in_features: int,
      hidden_features: int,
      bottleneck_features: int,
      *,
      num_layers: int = 3,
      use_batch_norm: bool = False,
      dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    init = nnx.initializers.truncated_normal(stddev=0.02)  # the reference's trunc_normal_(std=.02)
    linear = lambda i, o: nnx.Linear(i, o, kernel_init=init, dtype=dtype, rngs=rngs)
    self.hidden = nnx.List([linear(in_features if i == 0 else hidden_features, hidden_features) for i in range(num_layers - 1)])
    self.norms = nnx.List(
        [batch_norm(hidden_features, dtype=dtype, rngs=rngs) for _ in self.hidden]
        if use_batch_norm
        else []
    )
    self.output = linear(hidden_features if num_layers > 1 else in_features, bottleneck_features)

  def __call__(self, x: jax.Array) -> jax.Array:
    for i, layer in enumerate(self.hidden):
      x = layer(x)
      if self.norms:
        x = self.norms[i](x)
      x = nnx.gelu(x, approximate=False)
    x = self.output(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


class WeightNormLinear(nnx.Module):
  """y = x W with W[:, k] = g_k v_k / ||v_k|| (Salimans & Kingma 2016), no bias.

  DINO's last layer; with `learn_scale=False` (the reference's norm_last_layer=True) g = 1, so the
  outputs are cosine similarities to K unit prototypes, which the paper found stabilises training.
  """

  def __init__(self, in_features: int, out_features: int, *, learn_scale: bool = False, rngs: nnx.Rngs):
    self.direction = nnx.Param(nnx.initializers.truncated_normal(stddev=0.02)(rngs.params(), (in_features, out_features)))
    self.scale = nnx.Param(jnp.ones((out_features,))) if learn_scale else None

  def __call__(self, x: jax.Array) -> jax.Array:
    v = self.direction[...]
    kernel = v * jax.lax.rsqrt(jnp.maximum(jnp.sum(v * v, axis=0, keepdims=True), 1e-24))
    if self.scale is not None:
      kernel = kernel * self.scale[...]
    return x @ kernel.astype(x.dtype)
