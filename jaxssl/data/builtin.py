"""Built-in image datasets that work offline, with no download.

`patterns` (the image quickstarts') and `scenes` (objects in outdoor scenes, with an upright, a
layout and colours that depend on the object: the pretext tasks' data, and the held-out set of
the presets) are drawn procedurally; see `jaxssl.data.patterns` and `jaxssl.data.scenes`.
`digits` and `textured_digits` are made from scikit-learn's bundled handwritten digits
(`sklearn.datasets.load_digits`: 1797 real 8x8 digits written by 43 people,
grey levels 0..16). The base digits are split by index: every fifth digit
(`i % 5 == 0`) goes to `test`, the rest to `train`, so the test handwriting is
never seen during training.

`digits`
  Each base digit upsampled (bilinear) to `image_size` x `image_size`, white on
  black and replicated to 3 channels. An easy sanity-check dataset: a
  nearest-neighbour classifier on raw pixels is already very accurate.

`textured_digits`
  The quickstart dataset, made so that self-supervised learning has something
  to learn. Every base digit is rendered several times (4 copies in `train`,
  2 in `test`), each copy with its own random coloured background texture
  (per-pixel colour noise over smooth colour blobs and a global tint), a
  random digit size (45%-80% of the image), a random position and a random
  digit colour that keeps enough luminance contrast with the background under
  it. The digit's class is the only thing shared by two copies; colour,
  position, scale and background are nuisances that dominate pixel distances.
  As a result a kNN classifier on raw pixels, or on the features of a randomly
  initialised network, is weak, while a representation that has learned to be
  invariant to crops (position and scale) and colour changes -- exactly what
  contrastive and self-distillation methods learn from random resized crops
  and colour jitter -- recovers the digit. Learning that takes longer than a
  few CPU minutes, though: the quickstart uses `patterns`.
"""

from __future__ import annotations

import functools

import numpy as np

from jaxssl.data.base import DataError

BUILTIN_DATASETS = ('patterns', 'scenes', 'digits', 'textured_digits')
BUILTIN_SPLITS = ('train', 'test')

# Number of rendered copies of every base digit in `textured_digits`.
_COPIES = {'train': 4, 'test': 2}
# Mixed into the random seed so the two splits use unrelated random streams.
_SPLIT_IDS = {'train': 0, 'test': 1}
# ITU-R BT.601 luma weights.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def load_builtin(
    name: str, split: str, image_size: int = 32, seed: int = 0
) -> dict[str, np.ndarray]:
  """Returns a built-in dataset split as in-memory arrays.

  Args:
    name: one of `BUILTIN_DATASETS`.
    split: 'train' or 'test'.
    image_size: height and width of the returned images (at least 8).
    seed: seed of the random rendering (used by `patterns` and `textured_digits`).

  Returns:
    `{'image': uint8[N, S, S, 3], 'label': int32[N]}`; the arrays are cached
    in-process and read-only, so copy them before modifying them in place.
    The result is deterministic for a given (name, split, image_size, seed).
  """
  if name not in BUILTIN_DATASETS:
    raise DataError(
        f'Unknown built-in dataset {name!r}; valid names are '
        f'{", ".join(BUILTIN_DATASETS)} (use e.g. config.data.name = '
        '"builtin:patterns").'
    )
  if split not in BUILTIN_SPLITS:
    raise DataError(
        f'Unknown split {split!r} for built-in dataset {name!r}; valid splits '
        f'are {", ".join(BUILTIN_SPLITS)}, so set config.data.train_split / '
        'config.data.eval_split to one of them.'
    )
  image_size = int(image_size)
  if image_size < 8:
    raise DataError(
        f'Built-in dataset {name!r} needs image_size >= 8 but got '
        f'{image_size}; set config.data.image_size to 8 or more.'
    )
  return _load_cached(name, split, image_size, int(seed))


def base_indices(name: str, split: str) -> np.ndarray:
  """Index into `load_digits()` of the base digit behind each image.

  Aligned with `load_builtin(name, split)`; `textured_digits` lists one copy of
  every base digit, then the next copy, and so on. Not defined for `patterns`.
  """
  if name not in BUILTIN_DATASETS or split not in BUILTIN_SPLITS:
    load_builtin(name, split)  # Raises the DataError.
  if name in ('patterns', 'scenes'):
    raise ValueError(f"{name!r} is not made from digits.")
  index = np.arange(len(_all_digits()[0]))
  index = index[index % 5 == 0] if split == 'test' else index[index % 5 != 0]
  if name == 'textured_digits':
    index = np.tile(index, _COPIES[split])
  return index


@functools.lru_cache(maxsize=8)
def _load_cached(
    name: str, split: str, image_size: int, seed: int
) -> dict[str, np.ndarray]:
  if name == 'patterns':
    return _read_only(_load_patterns(split, image_size, seed))
  if name == 'scenes':
    return _read_only(_load_scenes(split, image_size, seed))
  digits, labels = _base_digits(split)
  if name == 'digits':
    images = _render_plain(digits, image_size)
  else:
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], image_size])
    copies = _COPIES[split]
    # Copy-major order: the first len(digits) images are one copy of each.
    digits = np.tile(digits, (copies, 1, 1))
    labels = np.tile(labels, copies)
    images = _render_textured(digits, image_size, rng)
  return _read_only({'image': images, 'label': labels.astype(np.int32)})


def _read_only(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  for array in arrays.values():
    array.flags.writeable = False
  return arrays


def _load_patterns(split: str, image_size: int, seed: int) -> dict[str, np.ndarray]:
  from jaxssl.data import patterns  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng([seed, _SPLIT_IDS[split], image_size, 1])
  # Balanced classes in a shuffled order.
  num_classes = len(patterns.CLASS_NAMES)
  labels = rng.permutation(np.arange(patterns.SPLIT_SIZES[split]) % num_classes).astype(np.int32)
  images = patterns.render_patterns(labels, image_size, rng, _contrasting_colours)
  return {'image': images, 'label': labels}


def _load_scenes(split: str, image_size: int, seed: int) -> dict[str, np.ndarray]:
  from jaxssl.data import scenes  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng([seed, _SPLIT_IDS[split], image_size, 2])
  num_classes = len(scenes.CLASS_NAMES)
  labels = rng.permutation(np.arange(scenes.SPLIT_SIZES[split]) % num_classes).astype(np.int32)
  return {'image': scenes.render_scenes(labels, image_size, rng), 'label': labels}


@functools.lru_cache(maxsize=1)
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
  # Imported lazily: importing scikit-learn takes a few seconds.
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  bunch = datasets.load_digits()
  images = np.asarray(bunch.images, np.float32) / 16.0  # [1797, 8, 8] in [0, 1]
  labels = np.asarray(bunch.target, np.int32)
  return images, labels


def _base_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
  images, labels = _all_digits()
  is_test = np.arange(len(images)) % 5 == 0
  keep = is_test if split == 'test' else ~is_test
  return images[keep], labels[keep]


def _interp_matrices(
    out_size: int, in_size: int, start: np.ndarray, length: np.ndarray
) -> np.ndarray:
  """Bilinear resampling matrices that paste a signal into a longer one.

  Row `r` of matrix `n` holds the weights of the `in_size` input samples for
  output pixel `r` when the input is stretched over the output interval
  `[start[n], start[n] + length[n])` (in pixels, may be fractional). Output
  pixels outside the interval get zero weight; pixels partially covered by it
  are weighted by their coverage, which anti-aliases the borders.

  Returns:
    float32[N, out_size, in_size].
  """
  start = np.asarray(start, np.float32)[:, None, None]
  length = np.asarray(length, np.float32)[:, None, None]
  pixel = np.arange(out_size, dtype=np.float32)[None, :, None]
  # Input coordinate of each output pixel centre (input pixel centres at k).
  coord = (pixel + 0.5 - start) * (in_size / length) - 0.5
  coord = np.clip(coord, 0.0, in_size - 1.0)
  taps = np.arange(in_size, dtype=np.float32)[None, None, :]
  weights = np.maximum(0.0, 1.0 - np.abs(coord - taps))
  coverage = np.clip(
      np.minimum(pixel + 1.0, start + length) - np.maximum(pixel, start),
      0.0,
      1.0,
  )
  return (weights * coverage).astype(np.float32)


def _to_uint8(images: np.ndarray) -> np.ndarray:
  images = images * np.float32(255.0)
  np.rint(images, out=images)
  np.clip(images, 0, 255, out=images)
  return np.ascontiguousarray(images.astype(np.uint8))


def _render_plain(digits: np.ndarray, size: int) -> np.ndarray:
  """White-on-black digits upsampled to [N, size, size, 3]."""
  n, d = digits.shape[0], digits.shape[1]
  mat = _interp_matrices(size, d, np.zeros(1), np.full(1, size))[0]
  images = np.einsum('yi,nij,xj->nyx', mat, digits, mat, optimize=True)
  return np.repeat(_to_uint8(images)[..., None], 3, axis=-1).reshape(
      n, size, size, 3
  )


def _uniform(rng: np.random.Generator, low: float, high: float, shape):
  return low + (high - low) * rng.random(shape, dtype=np.float32)


def _render_backgrounds(
    n: int, size: int, rng: np.random.Generator
) -> np.ndarray:
  """Random coloured textures, float32[n, 3, S, S] (channels first) in [0, 1].

  A random base colour, smooth colour blobs and per-pixel colour noise. The
  texture has no structure that two crops of one image could match except
  its colour, which colour jitter and grayscale take away; the digit's shape
  is the only thing a crop-invariant representation can hold on to.
  """
  background = np.empty((n, 3, size, size), np.float32)
  background[...] = _uniform(rng, 0.2, 0.8, (n, 3, 1, 1))
  # Smooth random colour blobs: coarse noise upsampled bilinearly.
  grid = 4
  blob_mat = _interp_matrices(size, grid, np.zeros(1), np.full(1, size))[0]
  upsample = np.einsum('yi,xj->ijyx', blob_mat, blob_mat).reshape(
      grid * grid, size * size
  )
  coarse = rng.standard_normal((n * 3, grid * grid), dtype=np.float32)
  coarse *= np.float32(0.15)
  background += (coarse @ upsample).reshape(n, 3, size, size)
  # Per-pixel colour noise of a random strength.
  noise = rng.standard_normal((n, 3, size, size), dtype=np.float32)
  noise *= _uniform(rng, 0.08, 0.2, (n, 1, 1, 1))
  background += noise
  # Global contrast change and colour tint.
  background -= 0.5
  background *= _uniform(rng, 0.7, 1.3, (n, 1, 1, 1))
  background += 0.5
  background *= _uniform(rng, 0.75, 1.25, (n, 3, 1, 1))
  return np.clip(background, 0.0, 1.0, out=background)


def _contrasting_colours(
    background_luma: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
  """Random colours whose luminance differs from `background_luma` by >= 0.3."""
  n = background_luma.shape[0]
  margin = rng.uniform(0.3, 0.6, n)
  up = background_luma + margin
  down = background_luma - margin
  can_up, can_down = up <= 1.0, down >= 0.0
  go_up = np.where(can_up & can_down, rng.random(n) < 0.5, can_up)
  target = np.where(go_up, up, down)
  # Neither side has room for `margin`: take the farther extreme.
  neither = ~can_up & ~can_down
  target = np.where(neither, np.where(background_luma < 0.5, 1.0, 0.0), target)
  # A random hue/saturation, rescaled so its luminance is exactly `target`
  # while every channel stays within [0, 1].
  hue = rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32)
  deviation = hue - (hue @ _LUMA)[:, None]
  room = np.where(
      deviation > 0,
      (1.0 - target[:, None]) / np.maximum(deviation, 1e-6),
      target[:, None] / np.maximum(-deviation, 1e-6),
  )
  scale = np.minimum(1.0, room.min(axis=1, keepdims=True))
  return np.clip(target[:, None] + scale * deviation, 0.0, 1.0).astype(
      np.float32
  )


def _render_textured(
    digits: np.ndarray, size: int, rng: np.random.Generator
) -> np.ndarray:
  """Renders each 8x8 digit on its own random background."""
  n, d = digits.shape[0], digits.shape[1]
  images = _render_backgrounds(n, size, rng)  # [n, 3, S, S]
  # Random scale and a random position fully inside the canvas.
  extent = _uniform(rng, 0.45, 0.8, n) * size
  top = rng.random(n, dtype=np.float32) * (size - extent)
  left = rng.random(n, dtype=np.float32) * (size - extent)
  rows = _interp_matrices(size, d, top, extent)  # [n, S, 8]
  cols = _interp_matrices(size, d, left, extent)
  mask = np.matmul(np.matmul(rows, digits), cols.transpose(0, 2, 1))
  alpha = np.clip(mask * 1.5, 0.0, 1.0)  # [n, S, S], smooth stroke mask
  luma = np.matmul(_LUMA, images.reshape(n, 3, -1)).reshape(n, size, size)
  background_luma = (luma * alpha).sum((1, 2)) / np.maximum(
      alpha.sum((1, 2)), 1e-6
  )
  colour = _contrasting_colours(background_luma, rng)  # [n, 3]
  # Alpha-blend the digit colour over the background, in place.
  images += alpha[:, None] * (colour[:, :, None, None] - images)
  return _to_uint8(images.transpose(0, 2, 3, 1))
