"""On-device augmentation of video clips: the image pipeline applied per clip, and motion.

A clip [T, H, W, 3] gets ONE draw of the colour jitter / grayscale / blur decisions, applied
to every frame, so colours and blur do not flicker within a clip (BraVe, like most video SSL,
augments per clip). Crops and flips are drawn per clip on the host (`jaxssl.data.video`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxssl.transforms import augment


@functools.partial(jax.jit, static_argnames="spec")
def augment_clips(rng: jax.Array, clips: jax.Array, spec: augment.AugmentSpec) -> jax.Array:
  """[B, T, H, W, 3] uint8 or float -> float32 in [0, 1]; decisions per clip (key i for clip i)."""
  clips = augment.to_float_image(clips)
  if clips.ndim != 5 or clips.shape[-1] != 3:
    raise ValueError(f"expected clips of shape [B, T, H, W, 3], got {clips.shape}")
  image_size = min(clips.shape[2], clips.shape[3])
  keys = augment._match_batch_sharding(jax.random.split(rng, clips.shape[0]), clips)  # pylint: disable=protected-access

  def one_clip(key, clip):
    params = augment.sample_augment_params(key, spec, image_size)
    return jax.vmap(lambda frame: augment.apply_augment_params(frame, params, spec))(clip)

  with augment._mesh_context(clips):  # pylint: disable=protected-access
    return jnp.clip(jax.vmap(one_clip)(keys, clips), 0.0, 1.0)


def frame_differences(clips: jax.Array) -> jax.Array:
  """The motion modality: differences of consecutive frames, [B, T, H, W, C] -> [B, T-1, H, W, C].

  A cheap stand-in for optical flow that, like flow, is blind to static appearance.
  """
  return clips[:, 1:] - clips[:, :-1]


def standardize_flow(flow: jax.Array, scale: float = 20.0) -> jax.Array:
  """Precomputed flow in pixels -> roughly unit range (clipped), as flow networks are fed."""
  return jnp.clip(flow / scale, -1.0, 1.0)
