"""Multi-crop (Caron et al. 2020): 2 global crops plus V small local crops, batched per resolution.

The host pipeline delivers the global crops as `view0`, `view1` ([B, S, S, 3] each) and the
local crops as `local_views` ([B, V, s, s, 3]). Here they are augmented on device and run through
the backbone once per resolution, as the reference implementations do, so the local crops add
V small forward passes' worth of compute and no extra compilation per crop. Outputs are then
regrouped per crop as [C, B, ...], global crops first, for the cross-crop losses.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxssl.transforms import augment
from jaxssl.methods.common import view_images


def local_augment_spec(augment_config: ml_collections.ConfigDict) -> augment.AugmentSpec | None:
  """The on-device augmentation of the local crops, or None when the config has none."""
  local = augment_config.get("local_views")
  return augment.spec_from_config(local) if local and local.get("num") else None


def augmented_crop_groups(
    rng: jax.Array,
    batch: dict,
    global_specs: tuple[augment.AugmentSpec, ...],
    local_spec: augment.AugmentSpec | None,
) -> list[jax.Array]:
  """Augmented, normalised crops, one array per resolution.

  Returns [globals] or [globals, locals]: globals are [G * B, S, S, 3], crop-major (all of crop 0,
  then crop 1); locals are [B * V, s, s, 3], example-major (as the host batch stores them).
  """
  global_key, local_key = jax.random.split(rng)
  views = tuple(batch[f"view{i}"] for i in range(len(global_specs)))
  groups = [jnp.concatenate(view_images(global_key, views, global_specs))]
  if local_spec is not None and "local_views" in batch:
    local = batch["local_views"]
    flat = local.reshape((-1,) + local.shape[2:])
    groups.append(augment.normalize(augment.augment_images(local_key, flat, local_spec)))
  return groups


def backbone_features(backbone, params: Any, stats: Any, groups: list[jax.Array], *, train: bool = True):
  """Backbone features of every crop, [N, D]: one pass per resolution, concatenated.

  BatchNorm sees each resolution as its own batch (the reference's per-resolution forward);
  the running statistics are updated after each pass in turn.
  """
  features = []
  for images in groups:
    out, stats = backbone(params, stats, images, train=train)
    features.append(out)
  return jnp.concatenate(features), stats


def per_crop(outputs: jax.Array, batch_size: int, num_global: int) -> jax.Array:
  """Regroups outputs of `augmented_crop_groups`' order as [C, B, ...], global crops first."""
  global_part = outputs[: num_global * batch_size].reshape((num_global, batch_size) + outputs.shape[1:])
  local_part = outputs[num_global * batch_size :]
  if not local_part.shape[0]:
    return global_part
  num_local = local_part.shape[0] // batch_size
  local_part = local_part.reshape((batch_size, num_local) + outputs.shape[1:]).swapaxes(0, 1)
  return jnp.concatenate([global_part, local_part])
