"""Audio backbone: a ResNet over log-mel spectrograms treated as one-channel images [time, mel]."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxssl.errors import UserError
from jaxssl.models import resnet

# ResNet-9 (one basic block per stage) is the small audio net of GDT/XDC; 18/50 as for images.
_STAGES = {9: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}
AUDIO_BACKBONES = tuple(f"resnet{d}" for d in _STAGES)


class AudioResNet(nnx.Module):
  """[B, T, F] log-mel spectrograms -> pooled features [B, num_features]."""

  def __init__(self, depth: int = 18, width_multiplier: float = 1.0, dtype: Any = None, *, rngs: nnx.Rngs):
    if depth not in _STAGES:
      raise UserError(f"Audio ResNet depth {depth} is not supported; choose one of {sorted(_STAGES)}.")
    block_cls = resnet.BottleneckBlock if depth == 50 else resnet.BasicBlock
    base = max(1, int(round(64 * width_multiplier)))
    self.stem_conv = resnet._conv(1, base, 7, 2, dtype, rngs)  # pylint: disable=protected-access
    self.stem_bn = resnet._batch_norm(base, dtype, rngs)  # pylint: disable=protected-access
    blocks, features = [], base
    for stage, count in enumerate(_STAGES[depth]):
      for index in range(count):
        blocks.append(block_cls(features, base * 2**stage, 2 if stage > 0 and index == 0 else 1, dtype, rngs))
        features = base * 2**stage * block_cls.expansion
    self.blocks = nnx.List(blocks)
    self.num_features = features

  def __call__(self, spectrograms: jax.Array) -> jax.Array:
    x = nnx.relu(self.stem_bn(self.stem_conv(spectrograms[..., None])))
    for block in self.blocks:
      x = block(x)
    features = jnp.mean(x, axis=(1, 2))
    return features.astype(jnp.promote_types(features.dtype, jnp.float32))


def make_audio_backbone(name: str, width_multiplier: float, dtype: Any, rngs: nnx.Rngs) -> AudioResNet:
  if name not in AUDIO_BACKBONES:
    raise UserError(f"Audio backbone '{name}' is not known; choose one of {AUDIO_BACKBONES}.")
  return AudioResNet(int(name[len("resnet"):]), width_multiplier, dtype, rngs=rngs)
