"""Host-side random views of one record (NumPy + PIL, run in the data loader).

Geometric augmentations (random resized crop and horizontal flip) change image
shapes, so they run on the host, per record; photometric augmentations run
batched on device (`jaxssl.transforms.augment`).

All randomness comes from the `np.random.Generator` that grain hands to a
`RandomMap` transform. grain derives that generator from the pipeline seed and
the index of the record in the (shuffled, repeated) stream, so the views of a
record are reproducible, also after restoring a checkpointed iterator, and do
not depend on the number of threads or worker processes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np
from PIL import Image

_RESAMPLE = Image.Resampling.BILINEAR


def _resize_box(
    image: np.ndarray, size: int, box: tuple[float, float, float, float]
) -> np.ndarray:
  """Resizes the (left, top, right, bottom) box of `image` to size x size."""
  image = np.asarray(image, np.uint8)
  pil = Image.fromarray(image)
  return np.asarray(pil.resize((size, size), _RESAMPLE, box=box))


def crop_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
  """Samples an Inception-style crop; returns (top, left, crop_h, crop_w).

  Tries 10 times to sample a crop with area fraction in `scale` and aspect
  ratio (width / height) log-uniform in `ratio` that fits in the image; falls
  back to the largest centre crop with an aspect ratio within `ratio`.
  """
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
    crop_w = int(round(math.sqrt(target_area * aspect)))
    crop_h = int(round(math.sqrt(target_area / aspect)))
    if 0 < crop_w <= width and 0 < crop_h <= height:
      top = int(rng.integers(0, height - crop_h + 1))
      left = int(rng.integers(0, width - crop_w + 1))
      return top, left, crop_h, crop_w
  # Fallback: centre crop, clamping the aspect ratio into `ratio`.
  in_ratio = width / height
  if in_ratio < min(ratio):
    crop_w = width
    crop_h = int(round(crop_w / min(ratio)))
  elif in_ratio > max(ratio):
    crop_h = height
    crop_w = int(round(crop_h * max(ratio)))
  else:
    crop_w, crop_h = width, height
  return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def random_resized_crop(
    image: np.ndarray,
    rng: np.random.Generator,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
  """Random crop (area fraction in `scale`, aspect in `ratio`) resized to size.

  Args:
    image: uint8[H, W, 3].
    rng: the generator to draw the crop from.
    size: output height and width.
    scale: range of the crop area as a fraction of the image area.
    ratio: range of the crop aspect ratio (width / height), sampled
      log-uniformly.

  Returns:
    uint8[size, size, 3], resized with PIL's (antialiased) bilinear filter.
  """
  height, width = image.shape[:2]
  top, left, crop_h, crop_w = crop_box(height, width, rng, scale, ratio)
  return _resize_box(image, size, (left, top, left + crop_w, top + crop_h))


def center_resize(image: np.ndarray, size: int) -> np.ndarray:
  """Resizes the shorter side to `size` and centre-crops to size x size.

  Images that already are size x size are returned unchanged.
  """
  height, width = image.shape[:2]
  if height == size and width == size:
    return np.asarray(image, np.uint8)
  side = min(height, width)
  top, left = (height - side) / 2, (width - side) / 2
  return _resize_box(image, size, (left, top, left + side, top + side))


@dataclasses.dataclass(frozen=True)
class ViewSpec:
  """How to make one random view.

  Attributes:
    size: output height and width.
    scale: crop area range as a fraction of the image area.
    ratio: crop aspect-ratio range (width / height).
    flip_prob: probability of a horizontal flip.
  """

  size: int
  scale: tuple[float, float] = (0.08, 1.0)
  ratio: tuple[float, float] = (3 / 4, 4 / 3)
  flip_prob: float = 0.5

  @classmethod
  def create(cls, spec: Any) -> ViewSpec:
    """Builds a ViewSpec from a ViewSpec, a mapping / ConfigDict or an int size."""
    if isinstance(spec, cls):
      return spec
    if isinstance(spec, int):
      return cls(size=spec)
    if hasattr(spec, 'to_dict'):  # ml_collections.ConfigDict
      spec = spec.to_dict()
    if not isinstance(spec, Mapping):
      raise TypeError(
          f'A view spec must be a ViewSpec, a mapping or an int; got {spec!r}.'
      )
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(spec) - fields)
    if unknown:
      raise ValueError(
          f'Unknown view spec keys {unknown}; valid keys are {sorted(fields)}.'
      )
    kwargs = dict(spec)
    for key in ('scale', 'ratio'):
      if key in kwargs:
        kwargs[key] = tuple(float(v) for v in kwargs[key])
    return cls(**kwargs)


def random_view(
    image: np.ndarray, rng: np.random.Generator, spec: ViewSpec
) -> np.ndarray:
  """A random resized crop of `image` followed by a random horizontal flip."""
  view = random_resized_crop(image, rng, spec.size, spec.scale, spec.ratio)
  if rng.random() < spec.flip_prob:
    view = view[:, ::-1]
  return np.ascontiguousarray(view)


class MultiViewTransform(grain.transforms.RandomMap):
  """Makes `len(view_specs)` random views of each record, plus optional
  multi-crop local views (Caron et al. 2020).

  Input record: `{'image': uint8[H, W, 3], 'label': int32}`.
  Output record: `{'view0': uint8[S0, S0, 3], 'view1': ..., 'label': int32}`,
  each view a random resized crop followed by a random horizontal flip. With
  `num_local_views` V > 0 it also has `'local_views': uint8[V, s, s, 3]`, V
  crops drawn with `local_view_spec` (smaller size and scale range). Local
  views share one resolution, so they batch into a single array and a model
  can process them in one pass.
  """

  def __init__(
      self,
      view_specs: Sequence[Any],
      local_view_spec: Any = None,
      num_local_views: int = 0,
  ):
    self.view_specs = tuple(ViewSpec.create(s) for s in view_specs)
    if not self.view_specs:
      raise ValueError('MultiViewTransform needs at least one view spec.')
    if num_local_views < 0:
      raise ValueError(
          f'num_local_views is {num_local_views}; set it to 0 (no local '
          'views) or a positive number.'
      )
    if num_local_views and local_view_spec is None:
      raise ValueError(
          f'{num_local_views} local views were requested without a '
          'local_view_spec; give their size and crop scale.'
      )
    self.num_local_views = int(num_local_views)
    self.local_view_spec = (
        ViewSpec.create(local_view_spec) if self.num_local_views else None
    )

  def random_map(
      self, element: Mapping[str, Any], rng: np.random.Generator
  ) -> dict[str, Any]:
    image = element['image']
    out = {}
    for i, spec in enumerate(self.view_specs):
      out[f'view{i}'] = random_view(image, rng, spec)
    if self.num_local_views:
      out['local_views'] = np.stack([
          random_view(image, rng, self.local_view_spec)
          for _ in range(self.num_local_views)
      ])
    out['label'] = np.int32(element['label'])
    if 'index' in element:  # the record's dataset index (see pipeline.make_train_iterator)
      out['index'] = np.int32(element['index'])
    return out

  def __repr__(self) -> str:
    local = (
        f', {self.num_local_views} x {self.local_view_spec}'
        if self.num_local_views
        else ''
    )
    return f'MultiViewTransform({list(self.view_specs)}{local})'


def local_view_settings(augment_config: Any) -> dict[str, Any]:
  """`make_train_iterator` keyword arguments for the multi-crop local views of
  `config.augment` (none when it has no `local_views` or their `num` is 0)."""
  local = augment_config.get('local_views') if augment_config else None
  if not local or not local.get('num'):
    return {}
  spec = ViewSpec(
      size=int(local.size),
      scale=tuple(float(v) for v in local.crop_scale),
      flip_prob=float(local.get('flip_prob', 0.5)),
  )
  return {'local_view_spec': spec, 'num_local_views': int(local.num)}


class TwoViewTransform(MultiViewTransform):
  """Two views with the same spec (SimCLR / BYOL style)."""

  def __init__(
      self,
      size: int,
      scale: tuple[float, float] = (0.08, 1.0),
      flip_prob: float = 0.5,
  ):
    spec = ViewSpec(size=size, scale=tuple(scale), flip_prob=flip_prob)
    super().__init__((spec, spec))
