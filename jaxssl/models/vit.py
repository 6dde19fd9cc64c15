"""Vision Transformer encoders (Dosovitskiy et al. 2021) in flax NNX, as MoCo v3 uses them.

Images [B, H, W, 3] are cut into non-overlapping P x P patches, linearly projected to tokens,
prefixed with a class token, given position embeddings and passed through pre-norm Transformer
blocks (x + MHSA(LN(x)), x + MLP(LN(x))); the output is the class token after a final LayerNorm.

MoCo v3 (Chen, Xie, He 2021, sec. 4) details that are options here:
  - fixed 2-D sin-cos position embeddings (`position_embedding='sincos'`), the class token's zero;
  - a frozen random patch projection (`freeze_patch_embedding`), the fix for the training
    instability it found: the projection keeps its random initialisation. The model stops its
    gradient; `jaxssl.optim` also masks its updates so weight decay cannot move it either;
  - Xavier-uniform weights, q, k and v initialised as separate D x D matrices.
A ViT has no BatchNorm, so its batch statistics are an empty dict.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxssl.errors import UserError

# (width, depth, heads) of ViT-Ti/S/B: Touvron et al. 2021 (DeiT), table 1; Dosovitskiy et al.
# 2021, table 1. MoCo v3 uses 12 heads for ViT-S (its table 1 footnote); set `num_heads` for it.
VARIANTS = {
    "vit_tiny": (192, 12, 3),
    "vit_small": (384, 12, 6),
    "vit_base": (768, 12, 12),
}
POSITION_EMBEDDINGS = ("sincos", "learned")

# Name of the patch projection inside the ViT; `jaxssl.optim` masks its updates when frozen.
PATCH_EMBEDDING = "patch_embedding"


@dataclasses.dataclass(frozen=True)
class ViTConfig:
  width: int = 384
  depth: int = 12
  num_heads: int = 6
  mlp_ratio: float = 4.0
  patch_size: int = 16
  image_size: int = 224  # only a learned position embedding depends on it
  position_embedding: str = "sincos"
  freeze_patch_embedding: bool = False
  dtype: Any = None  # compute dtype; parameters stay float32.


def sincos_position_embedding(grid_height: int, grid_width: int, width: int, temperature: float = 10000.0) -> np.ndarray:
  """MoCo v3's fixed 2-D sin-cos embedding [grid_height * grid_width, width], rows in raster order.

  A quarter of the channels each: sin(x w), cos(x w), sin(y w), cos(y w) with
  w_d = temperature^(-d / (width / 4)), d = 0 .. width / 4 - 1.
  """
  if width % 4:
    raise UserError(f"A 2-D sin-cos position embedding needs a width divisible by 4, got {width}; choose another ViT width.")
  quarter = width // 4
  omega = 1.0 / temperature ** (np.arange(quarter, dtype=np.float64) / quarter)
  y, x = np.meshgrid(np.arange(grid_height, dtype=np.float64), np.arange(grid_width, dtype=np.float64), indexing="ij")
  x_angles = x.reshape(-1, 1) * omega
  y_angles = y.reshape(-1, 1) * omega
  return np.concatenate([np.sin(x_angles), np.cos(x_angles), np.sin(y_angles), np.cos(y_angles)], axis=1).astype(np.float32)


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
  """[B, H, W, C] -> [B, (H / P) * (W / P), P * P * C], patches in raster order."""
  batch, height, width, channels = images.shape
  if height % patch_size or width % patch_size:
    raise UserError(
        f"Images of {height}x{width} pixels do not split into {patch_size}x{patch_size} patches; "
        f"set config.model.vit.patch_size to a divisor of the image size."
    )
  rows, cols = height // patch_size, width // patch_size
  patches = images.reshape(batch, rows, patch_size, cols, patch_size, channels)
  return patches.transpose(0, 1, 3, 2, 4, 5).reshape(batch, rows * cols, patch_size * patch_size * channels)


def _linear(in_features: int, out_features: int, dtype: Any, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(
      in_features,
      out_features,
      dtype=dtype,
      kernel_init=nnx.initializers.xavier_uniform(),
      bias_init=nnx.initializers.zeros,
      rngs=rngs,
  )


def _layer_norm(features: int, dtype: Any, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(features, epsilon=1e-6, dtype=dtype, rngs=rngs)  # eps as in timm / MoCo v3


class SelfAttention(nnx.Module):
  """Multi-head self-attention; softmax in at least float32."""

  def __init__(self, width: int, num_heads: int, dtype: Any, rngs: nnx.Rngs):
    if width % num_heads:
      raise UserError(f"The ViT width {width} does not divide into {num_heads} heads; change config.model.vit.num_heads.")
    self.num_heads = num_heads
    # Separate D x D projections: MoCo v3 initialises q, k, v as three matrices, not one D x 3D.
    self.query = _linear(width, width, dtype, rngs)
    self.key = _linear(width, width, dtype, rngs)
    self.value = _linear(width, width, dtype, rngs)
    self.output = _linear(width, width, dtype, rngs)

  def _split_heads(self, y: jax.Array) -> jax.Array:
    batch, tokens, width = y.shape
    return y.reshape(batch, tokens, self.num_heads, width // self.num_heads)

  def weights(self, x: jax.Array) -> jax.Array:
    """Attention weights [B, heads, queries, keys], softmax in at least float32."""
    q, k = self._split_heads(self.query(x)), self._split_heads(self.key(x))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    return jax.nn.softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)

  def __call__(self, x: jax.Array) -> jax.Array:
    batch, tokens, width = x.shape
    v = self._split_heads(self.value(x))
    attended = jnp.einsum("bhqk,bkhd->bqhd", self.weights(x).astype(v.dtype), v).reshape(batch, tokens, width)
    return self.output(attended)


class Block(nnx.Module):
  """A pre-norm Transformer block: x + MHSA(LN(x)), then x + MLP(LN(x))."""

  def __init__(self, width: int, num_heads: int, mlp_ratio: float, dtype: Any, rngs: nnx.Rngs):
    hidden = int(width * mlp_ratio)
    self.attention_norm = _layer_norm(width, dtype, rngs)
    self.attention = SelfAttention(width, num_heads, dtype, rngs)
    self.mlp_norm = _layer_norm(width, dtype, rngs)
    self.mlp_hidden = _linear(width, hidden, dtype, rngs)
    self.mlp_output = _linear(hidden, width, dtype, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attention(self.attention_norm(x))
    hidden = nnx.gelu(self.mlp_hidden(self.mlp_norm(x)), approximate=False)  # exact GELU, as torch's nn.GELU
    return x + self.mlp_output(hidden)


class ViT(nnx.Module):
  """A ViT encoder returning the final class token, of size `num_features`."""

  def __init__(self, config: ViTConfig, *, rngs: nnx.Rngs):
    if config.position_embedding not in POSITION_EMBEDDINGS:
      raise UserError(
          f"config.model.vit.position_embedding '{config.position_embedding}' is not known; "
          f"choose one of {POSITION_EMBEDDINGS}."
      )
    self.config = config
    width = config.width
    patch_features = config.patch_size * config.patch_size * 3
    # Xavier-uniform over the flattened patch (fan-in 3 P^2, fan-out D), as MoCo v3 initialises it.
    setattr(self, PATCH_EMBEDDING, _linear(patch_features, width, config.dtype, rngs))
    self.class_token = nnx.Param(1e-6 * jax.random.normal(rngs.params(), (1, 1, width)))
    if config.position_embedding == "learned":
      grid = config.image_size // config.patch_size
      init = nnx.initializers.truncated_normal(stddev=0.02)  # timm's ViT
      self.position = nnx.Param(init(rngs.params(), (1, grid * grid + 1, width)))
    self.blocks = nnx.List([Block(width, config.num_heads, config.mlp_ratio, config.dtype, rngs) for _ in range(config.depth)])
    self.norm = _layer_norm(width, config.dtype, rngs)
    self.num_features = width

  def _position_embedding(self, grid_height: int, grid_width: int, dtype) -> jax.Array:
    if self.config.position_embedding == "learned":
      expected = self.position.shape[1] - 1
      if grid_height * grid_width != expected:
        raise UserError(
            f"The learned position embedding has {expected} patches but the images give "
            f"{grid_height * grid_width}; set config.model.vit.image_size to the training image size."
        )
      return self.position[...].astype(dtype)
    patches = sincos_position_embedding(grid_height, grid_width, self.config.width)
    return jnp.asarray(np.concatenate([np.zeros((1, self.config.width), np.float32), patches])[None], dtype)

  def class_attention(self, images: jax.Array) -> jax.Array:
    """The last block's attention from the class token to each patch, per head:
    [B, heads, rows, columns] (the maps of DINO's figure 1)."""
    x = self._tokens(images)
    for block in self.blocks[:-1]:
      x = block(x)
    last = self.blocks[-1]
    weights = last.attention.weights(last.attention_norm(x))[:, :, 0, 1:]
    patch_size = self.config.patch_size
    return weights.reshape(*weights.shape[:2], images.shape[1] // patch_size, images.shape[2] // patch_size)

  def _tokens(self, images: jax.Array) -> jax.Array:
    """The class token and the patch tokens, with position embeddings: the first block's input."""
    patch_size = self.config.patch_size
    patches = patchify(images, patch_size)
    tokens = getattr(self, PATCH_EMBEDDING)(patches)
    if self.config.freeze_patch_embedding:
      # MoCo v3's "stop-grad after the patch embedding": the projection stays random.
      tokens = jax.lax.stop_gradient(tokens)
    batch = tokens.shape[0]
    class_token = jnp.broadcast_to(self.class_token[...].astype(tokens.dtype), (batch, 1, tokens.shape[-1]))
    x = jnp.concatenate([class_token, tokens], axis=1)
    return x + self._position_embedding(images.shape[1] // patch_size, images.shape[2] // patch_size, x.dtype)

  def __call__(self, images: jax.Array) -> jax.Array:
    x = self._tokens(images)
    for block in self.blocks:
      x = block(x)
    features = self.norm(x)[:, 0]
    return features.astype(jnp.promote_types(features.dtype, jnp.float32))  # bf16 -> f32, f64 stays
