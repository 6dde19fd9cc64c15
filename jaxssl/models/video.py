"""Video backbones: TSM-ResNet, R(2+1)D-18 and a small 3D CNN for CPU runs.

Every backbone maps clips [B, T, H, W, C] to pooled features [B, num_features]; C is 3 for RGB
and frame differences, 2 for optical flow.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxssl.errors import UserError
from jaxssl.models import resnet

VIDEO_BACKBONES = ("tsm_resnet18", "tsm_resnet50", "r2plus1d_18", "small3d")


def _batch_norm(features: int, dtype: Any, rngs: nnx.Rngs, zero_scale: bool = False) -> nnx.BatchNorm:
  return resnet._batch_norm(features, dtype, rngs, zero_scale)  # pylint: disable=protected-access


def conv3d(x: jax.Array, kernel: jax.Array, strides: tuple[int, int, int]) -> jax.Array:
  """'Same'-padded 3-D convolution of x [B, T, H, W, C] with an odd-sized kernel [kt, kh, kw, C, O].

  XLA:CPU runs 3-D convolutions through a slow generic loop (its backward pass is about 50x
  slower than 2-D convolutions of the same FLOPs), which made CPU video runs impractical. On CPU
  the kt temporal taps are therefore stacked along channels and computed as ONE 2-D convolution
  of every output frame, which is the same sum term by term; TPU and GPU use the native op.
  """
  kt, kh, kw, in_features, out_features = kernel.shape
  spatial_padding = [(kh // 2, kh // 2), (kw // 2, kw // 2)]
  if jax.default_backend() != "cpu":
    return jax.lax.conv_general_dilated(
        x, kernel, strides, [(kt // 2, kt // 2)] + spatial_padding, dimension_numbers=("NDHWC", "DHWIO", "NDHWC")
    )
  batch, frames = x.shape[:2]
  x = jnp.pad(x, ((0, 0), (kt // 2, kt // 2), (0, 0), (0, 0), (0, 0)))
  out_frames = (frames - 1) // strides[0] + 1
  # taps[b, t, ..., dt * C + c] = x_padded[b, t * stride + dt, ..., c]
  taps = jnp.concatenate([x[:, dt : dt + (out_frames - 1) * strides[0] + 1 : strides[0]] for dt in range(kt)], axis=-1)
  taps = taps.reshape(batch * out_frames, *taps.shape[2:])
  kernel_2d = jnp.moveaxis(kernel, 0, 2).reshape(kh, kw, kt * in_features, out_features)
  y = jax.lax.conv_general_dilated(taps, kernel_2d, strides[1:], spatial_padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y.reshape(batch, out_frames, *y.shape[1:])


class Conv3D(nnx.Module):
  """A bias-free 'same'-padded 3-D convolution (He init, fan-out) computed by `conv3d`."""

  def __init__(self, in_features: int, out_features: int, kernel: tuple[int, int, int], stride: tuple[int, int, int], dtype: Any, rngs: nnx.Rngs):
    if any(k % 2 == 0 for k in kernel):
      raise ValueError(f"Conv3D needs odd kernel sizes for 'same' padding, got {kernel}.")
    init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
    self.kernel = nnx.Param(init(rngs.params(), (*kernel, in_features, out_features)))
    self.strides = tuple(stride)
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.kernel[...]
    dtype = self.dtype if self.dtype is not None else jnp.promote_types(x.dtype, kernel.dtype)  # as nnx.Conv
    return conv3d(x.astype(dtype), kernel.astype(dtype), self.strides)


def _pool(x: jax.Array) -> jax.Array:
  features = jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))
  return features.astype(jnp.promote_types(features.dtype, jnp.float32))


# ----------------------------------------------------------------------------------------------
# TSM-ResNet (Lin et al. 2019): a 2D ResNet whose residual branches shift channels in time.
# ----------------------------------------------------------------------------------------------


def temporal_shift(x: jax.Array, num_frames: int, fraction: float = 0.125) -> jax.Array:
  """Shifts `fraction` of the channels one frame back in time and as many one frame forward.

  `x` is [B * T, H, W, C] (frames of a clip adjacent); vacated positions are zero, so no
  information leaks across clips. The shift costs no FLOPs and gives 2D convolutions a
  temporal receptive field (TSM's "residual shift").
  """
  frames = x.reshape(-1, num_frames, *x.shape[1:])
  shifted = max(1, int(x.shape[-1] * fraction))
  back = jnp.pad(frames[:, 1:, ..., :shifted], [(0, 0), (0, 1)] + [(0, 0)] * 3)  # frame t sees t+1
  forward = jnp.pad(frames[:, :-1, ..., shifted : 2 * shifted], [(0, 0), (1, 0)] + [(0, 0)] * 3)  # t sees t-1
  out = jnp.concatenate([back, forward, frames[..., 2 * shifted :]], axis=-1)
  return out.reshape(x.shape)


def _tsm_block(block: nnx.Module, x: jax.Array, num_frames: int, fraction: float) -> jax.Array:
  """A ResNet block with the temporal shift at the input of its residual branch only."""
  y = temporal_shift(x, num_frames, fraction)
  y = nnx.relu(block.bn1(block.conv1(y)))
  if isinstance(block, resnet.BottleneckBlock):
    y = nnx.relu(block.bn2(block.conv2(y)))
    y = block.bn3(block.conv3(y))
  else:
    y = block.bn2(block.conv2(y))
  residual = x if block.shortcut is None else block.shortcut(x)
  return nnx.relu(y + residual)


class TSMResNet(nnx.Module):
  """TSM-ResNet-18/50 with a width multiplier (BraVe's narrow backbone is TSM-ResNet-50 x1 or x2)."""

  def __init__(self, depth: int, width_multiplier: float, in_features: int = 3, shift_fraction: float = 0.125, stem: str = "imagenet", dtype: Any = None, *, rngs: nnx.Rngs):
    self.net = resnet.ResNet(resnet.ResNetConfig(depth=depth, width_multiplier=width_multiplier, stem=stem, dtype=dtype), rngs=rngs)
    if in_features != 3:  # e.g. 2-channel optical flow
      self.net.stem_conv = resnet._conv(in_features, self.net.stem_conv.out_features, self.net.stem_conv.kernel_size[0], self.net.stem_conv.strides[0], dtype, rngs)  # pylint: disable=protected-access
    self.shift_fraction = shift_fraction
    self.num_features = self.net.num_features

  def __call__(self, clips: jax.Array) -> jax.Array:
    batch, frames = clips.shape[:2]
    net = self.net
    x = clips.reshape(batch * frames, *clips.shape[2:])
    x = net.stem(x)  # frame by frame, as TSM's 2D stem
    for block in net.blocks:
      x = _tsm_block(block, x, frames, self.shift_fraction)
    return _pool(x.reshape(batch, frames, *x.shape[1:]))


# ----------------------------------------------------------------------------------------------
# R(2+1)D-18 (Tran et al. 2018): 3D convolutions factored into spatial 1xkxk then temporal kx1x1.
# ----------------------------------------------------------------------------------------------


class Conv2Plus1D(nnx.Module):
  """A (2+1)D convolution with the paper's intermediate width, which matches the 3D conv's parameters."""

  def __init__(self, in_features: int, out_features: int, stride: int, dtype: Any, rngs: nnx.Rngs):
    mid = max(1, (in_features * out_features * 27) // (in_features * 9 + 3 * out_features))
    self.spatial = Conv3D(in_features, mid, (1, 3, 3), (1, stride, stride), dtype, rngs)
    self.bn = _batch_norm(mid, dtype, rngs)
    self.temporal = Conv3D(mid, out_features, (3, 1, 1), (stride, 1, 1), dtype, rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.temporal(nnx.relu(self.bn(self.spatial(x))))


class R2Plus1DBlock(nnx.Module):

  def __init__(self, in_features: int, out_features: int, stride: int, dtype: Any, rngs: nnx.Rngs):
    self.conv1 = Conv2Plus1D(in_features, out_features, stride, dtype, rngs)
    self.bn1 = _batch_norm(out_features, dtype, rngs)
    self.conv2 = Conv2Plus1D(out_features, out_features, 1, dtype, rngs)
    self.bn2 = _batch_norm(out_features, dtype, rngs)
    needs_projection = stride != 1 or in_features != out_features
    self.shortcut = (
        nnx.Sequential(Conv3D(in_features, out_features, (1, 1, 1), (stride,) * 3, dtype, rngs), _batch_norm(out_features, dtype, rngs))
        if needs_projection else None
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.bn2(self.conv2(nnx.relu(self.bn1(self.conv1(x)))))
    return nnx.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class R2Plus1D18(nnx.Module):
  """R(2+1)D-18: a (2+1)D stem, then 4 stages of 2 blocks (64-512 channels x width multiplier)."""

  def __init__(self, width_multiplier: float = 1.0, in_features: int = 3, dtype: Any = None, *, rngs: nnx.Rngs):
    base = max(1, int(round(64 * width_multiplier)))
    stem_mid = max(1, int(round(45 * width_multiplier)))
    self.stem = nnx.Sequential(
        Conv3D(in_features, stem_mid, (1, 7, 7), (1, 2, 2), dtype, rngs), _batch_norm(stem_mid, dtype, rngs), nnx.relu,
        Conv3D(stem_mid, base, (3, 1, 1), (1, 1, 1), dtype, rngs), _batch_norm(base, dtype, rngs), nnx.relu,
    )
    blocks, features = [], base
    for stage in range(4):
      width = base * 2**stage
      for index in range(2):
        blocks.append(R2Plus1DBlock(features, width, 2 if stage > 0 and index == 0 else 1, dtype, rngs))
        features = width
    self.blocks = nnx.List(blocks)
    self.num_features = features

  def __call__(self, clips: jax.Array) -> jax.Array:
    x = self.stem(clips)
    for block in self.blocks:
      x = block(x)
    return _pool(x)


# ----------------------------------------------------------------------------------------------
# A small 3D CNN for CPU runs and tests.
# ----------------------------------------------------------------------------------------------


class Small3DCNN(nnx.Module):
  """Four 3x3x3 conv-BN-ReLU layers (widths w, 2w, 4w, 8w); space halves from the second, time from the third."""

  def __init__(self, width: int = 16, in_features: int = 3, dtype: Any = None, *, rngs: nnx.Rngs):
    layers, features = [], in_features
    strides = ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2))
    for stage, stride in enumerate(strides):
      out = width * 2**stage
      layers += [Conv3D(features, out, (3, 3, 3), stride, dtype, rngs), _batch_norm(out, dtype, rngs)]
      features = out
    self.layers = nnx.List(layers)
    self.num_features = features

  def __call__(self, clips: jax.Array) -> jax.Array:
    x = clips
    for conv, norm in zip(self.layers[::2], self.layers[1::2]):
      x = nnx.relu(norm(conv(x)))
    return _pool(x)


@dataclasses.dataclass(frozen=True)
class VideoBackboneConfig:
  name: str = "small3d"
  width_multiplier: float = 1.0  # TSM / R(2+1)D width factor; small3d: width = 16 x this
  in_features: int = 3
  stem: str = "imagenet"  # TSM only: 'small' keeps full resolution for tiny frames
  dtype: Any = None


def make_video_backbone(config: VideoBackboneConfig, rngs: nnx.Rngs) -> nnx.Module:
  if config.name.startswith("tsm_resnet") and config.name[len("tsm_resnet"):].isdigit():
    return TSMResNet(int(config.name[len("tsm_resnet"):]), config.width_multiplier, config.in_features, stem=config.stem, dtype=config.dtype, rngs=rngs)
  if config.name == "r2plus1d_18":
    return R2Plus1D18(config.width_multiplier, config.in_features, config.dtype, rngs=rngs)
  if config.name == "small3d":
    return Small3DCNN(max(1, int(round(16 * config.width_multiplier))), config.in_features, config.dtype, rngs=rngs)
  raise UserError(f"Video backbone '{config.name}' is not known; choose one of {VIDEO_BACKBONES}.")
