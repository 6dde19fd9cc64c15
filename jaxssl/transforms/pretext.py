"""Device-side constructions of the pretext tasks: the inputs and labels a task is trained on.

Cheap array indexing inside the jitted step, laid out so that each example's derived inputs stay
next to it along the batch axis: a batch sharded over devices by examples stays sharded the same
way after the construction, with no data moved between devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NUM_ROTATIONS = 4


def four_rotations(images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """All four rotations of every image, in one batch (RotNet's `rotate_img`, Gidaris et al. 2018).

  Args:
    images: [B, H, H, C] square images.

  Returns:
    rotated [4B, H, H, C] and labels [4B]: rows 4i .. 4i+3 are image i turned counter-clockwise
    by 0, 90, 180 and 270 degrees, labelled 0, 1, 2, 3.
  """
  if images.shape[1] != images.shape[2]:
    raise ValueError(f"Rotation prediction needs square images, got {images.shape[1]}x{images.shape[2]}; set each view's size.")
  rotated = jnp.stack([jnp.rot90(images, k, axes=(1, 2)) for k in range(NUM_ROTATIONS)], axis=1)
  labels = jnp.tile(jnp.arange(NUM_ROTATIONS, dtype=jnp.int32), images.shape[0])
  return rotated.reshape(-1, *images.shape[1:]), labels
