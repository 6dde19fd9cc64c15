"""ResNet-18/34/50 encoders in flax NNX, with ImageNet, half-resolution and small-image stems.

The encoder maps images [B, H, W, 3] to globally average-pooled features [B, D]; heads live in
`heads.py`. BatchNorm normalises over the whole (global) batch under sharded `jax.jit`, which
is what SimCLR/BYOL call "global BN".
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxssl.errors import UserError
from jaxssl.models import normalization, fast_paths

# (block type, blocks per stage) for each depth, as in He et al. 2016, table 1.
_DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}
# stem name -> (kernel, stride, max-pool): how fast the stem reduces resolution before stage 1.
STEMS = {
    "imagenet": (7, 2, True),  # /4: 224 px ImageNet images
    "half": (3, 2, False),  # /2: 24-64 px images on a budget (stage 1 at half resolution)
    "small": (3, 1, False),  # /1: CIFAR-style 32 px images, 4x the compute of 'half'
}


def _batch_norm(features: int, dtype: Any, rngs: nnx.Rngs, zero_scale: bool = False) -> nnx.BatchNorm:
  return normalization.batch_norm(features, dtype=dtype, rngs=rngs, zero_scale=zero_scale)


def _conv(in_features: int, out_features: int, kernel: int, stride: int, dtype: Any, rngs: nnx.Rngs, fast_cpu_paths: bool = False) -> nnx.Conv:
  conv_class = fast_paths.Conv if fast_cpu_paths else nnx.Conv
  return conv_class(
      in_features,
      out_features,
      kernel_size=(kernel, kernel),
      strides=(stride, stride),
      padding=[(kernel // 2, kernel // 2)] * 2,
      use_bias=False,
      dtype=dtype,
      kernel_init=nnx.initializers.variance_scaling(2.0, "fan_out", "normal"),
      rngs=rngs,
  )


def _shortcut(in_features: int, out_features: int, stride: int, dtype: Any, rngs: nnx.Rngs):
  """A 1x1 projection where the residual changes shape, else None (identity). (A 1x1
  convolution is fast as it is: no dense form.)"""
  if stride == 1 and in_features == out_features:
    return None
  return nnx.Sequential(_conv(in_features, out_features, 1, stride, dtype, rngs), _batch_norm(out_features, dtype, rngs))


class BasicBlock(nnx.Module):
  """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

  expansion = 1

  def __init__(
      self, in_features: int, width: int, stride: int, dtype: Any, rngs: nnx.Rngs, zero_init_residual: bool = False, fast_cpu_paths: bool = False
  ):
    out = width * self.expansion
    self.conv1 = _conv(in_features, width, 3, stride, dtype, rngs, fast_cpu_paths)
    self.bn1 = _batch_norm(width, dtype, rngs)
    self.conv2 = _conv(width, out, 3, 1, dtype, rngs, fast_cpu_paths)
    self.bn2 = _batch_norm(out, dtype, rngs, zero_scale=zero_init_residual)
    self.shortcut = _shortcut(in_features, out, stride, dtype, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    residual = x if self.shortcut is None else self.shortcut(x)
    return nnx.relu(y + residual)


class BottleneckBlock(nnx.Module):
  """1x1 reduce, 3x3 (strided, as in torchvision's v1.5), 1x1 expand by 4."""

  expansion = 4

  def __init__(
      self, in_features: int, width: int, stride: int, dtype: Any, rngs: nnx.Rngs, zero_init_residual: bool = False, fast_cpu_paths: bool = False
  ):
    out = width * self.expansion
    self.conv1 = _conv(in_features, width, 1, 1, dtype, rngs)
    self.bn1 = _batch_norm(width, dtype, rngs)
    self.conv2 = _conv(width, width, 3, stride, dtype, rngs, fast_cpu_paths)
    self.bn2 = _batch_norm(width, dtype, rngs)
    self.conv3 = _conv(width, out, 1, 1, dtype, rngs)
    self.bn3 = _batch_norm(out, dtype, rngs, zero_scale=zero_init_residual)
    self.shortcut = _shortcut(in_features, out, stride, dtype, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x)))
    y = nnx.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    residual = x if self.shortcut is None else self.shortcut(x)
    return nnx.relu(y + residual)


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
  depth: int = 50
  width_multiplier: float = 1.0
  stem: str = "imagenet"  # 'imagenet': 7x7/2 conv + 3x3/2 max-pool; 'half': one 3x3/2 conv; 'small': one 3x3/1 conv.
  dtype: Any = jnp.float32  # compute dtype; parameters stay float32.
  # Each block's last BN scale starts at 0, so every residual branch starts as the identity
  # (Goyal et al. 2017); torchvision's `zero_init_residual`, which SimSiam's code turns on.
  zero_init_residual: bool = False
  # 3x3 convolutions whose output map has at most 4 positions run as one matrix product, and the
  # stem's max pool as a maximum of slices (`fast_paths`): the same network, several times
  # faster on XLA:CPU at 24-64 px inputs.
  fast_cpu_paths: bool = False


class ResNet(nnx.Module):
  """A ResNet encoder returning pooled features of size `num_features`."""

  def __init__(self, config: ResNetConfig, *, rngs: nnx.Rngs):
    if config.depth not in _DEPTHS:
      raise UserError(f"ResNet depth {config.depth} is not supported; choose one of {sorted(_DEPTHS)}.")
    if config.stem not in STEMS:
      raise UserError(f"ResNet stem '{config.stem}' is not supported; choose one of {tuple(STEMS)}.")
    block_kind, stage_sizes = _DEPTHS[config.depth]
    block_cls = BasicBlock if block_kind == "basic" else BottleneckBlock
    base = max(1, int(round(64 * config.width_multiplier)))
    stem_kernel, stem_stride, self.stem_max_pool = STEMS[config.stem]
    self.stem_conv = _conv(3, base, stem_kernel, stem_stride, config.dtype, rngs)
    self.stem_bn = _batch_norm(base, config.dtype, rngs)
    blocks, block_widths = [], []
    in_features = base
    for stage, num_blocks in enumerate(stage_sizes):
      width = base * 2**stage
      for index in range(num_blocks):
        stride = 2 if stage > 0 and index == 0 else 1
        blocks.append(block_cls(in_features, width, stride, config.dtype, rngs, config.zero_init_residual, config.fast_cpu_paths))
        in_features = width * block_cls.expansion
        block_widths.append(in_features)
    self.blocks = nnx.List(blocks)
    self.block_widths = tuple(block_widths)  # channels of each block's output, in order
    self.fast_cpu_paths = config.fast_cpu_paths
    self.num_features = in_features

  def stem(self, images: jax.Array) -> jax.Array:
    """The input of the first stage."""
    x = nnx.relu(self.stem_bn(self.stem_conv(images)))
    if self.stem_max_pool and self.fast_cpu_paths:
      x = fast_paths.max_pool(x, window=3, stride=2, padding=1)
    elif self.stem_max_pool:
      x = nnx.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    return x

  def feature_map(self, images: jax.Array) -> jax.Array:
    """The last stage's output [B, h, w, num_features], before pooling (for dense heads)."""
    x = self.stem(images)
    for block in self.blocks:
      x = block(x)
    return x

  def block_outputs(self, images: jax.Array, last: int) -> list[jax.Array]:
    """The outputs of the last `last` residual blocks, in order (the last is `feature_map`'s)."""
    x = self.stem(images)
    outputs = []
    for index, block in enumerate(self.blocks):
      x = block(x)
      if index >= len(self.blocks) - last:
        outputs.append(x)
    return outputs

  def __call__(self, images: jax.Array) -> jax.Array:
    features = jnp.mean(self.feature_map(images), axis=(1, 2))
    return features.astype(jnp.promote_types(features.dtype, jnp.float32))  # bf16 -> f32, f64 stays
