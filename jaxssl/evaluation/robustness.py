"""Robustness and uncertainty of a classifier (Hendrycks et al. 2019's evaluation).

* Common corruptions (after Hendrycks & Dietterich 2019's CIFAR-10-C, whose severity levels 1-5
  are used for 32 px images), each applied to the clean test images on the device. Of CIFAR-10-C's
  four families: noise (Gaussian, shot, impulse: all three), blur (defocus, zoom; and the
  extra Gaussian blur), weather (fog, brightness) and digital (contrast, pixelate). Left out are
  those that need a host library or image files (glass and motion blur, snow, frost, elastic,
  JPEG). Brightness is added in RGB (CIFAR-10-C adds it to HSV value).
* Out-of-distribution detection: test images of the training data against those of another
  source (`config.robustness.ood_data`), scored by the maximum softmax probability (the
  baseline: score = -max p) and by the paper's score, the mean rotation loss over the four
  rotations minus KL(uniform || p); AUROC with the OOD images as positives.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxssl import parallel
from jaxssl.data import pipeline, sources
from jaxssl.data.base import DataSpec
from jaxssl.transforms import augment

# Per corruption, its parameter at severities 1..5 (CIFAR-10-C's values).
SEVERITIES = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # noise std
    "shot_noise": (500, 250, 100, 75, 50),  # photons per unit intensity (Poisson)
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # fraction of pixels set to 0 or 1
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)),  # disk radius, its blur
    "zoom_blur": (1.06, 1.11, 1.16, 1.21, 1.26),  # zooms 1, 1.01, ... below this, averaged
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # blur sigma in pixels
    "fog": ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)),  # fog strength, fractal decay
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to every channel
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # contrast kept
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # box-filtered down to this fraction and back
}


def defocus_kernel(radius: float, alias_sigma: float) -> np.ndarray:
  """CIFAR-10-C's defocus kernel: a disk of `radius` on a 17 x 17 grid, normalised, smoothed by a
  3 x 3 Gaussian of `alias_sigma` (reflected at the grid's border)."""
  offsets = np.arange(-8, 9)
  disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).astype(np.float64)
  disk /= disk.sum()
  taps = np.exp(-np.arange(-1, 2) ** 2 / (2.0 * alias_sigma**2))
  taps /= taps.sum()
  for axis in (0, 1):
    padded = np.pad(disk, [(1, 1) if a == axis else (0, 0) for a in (0, 1)], mode="reflect")
    disk = sum(t * np.take(padded, np.arange(k, k + 17), axis=axis) for k, t in enumerate(taps))
  return disk.astype(np.float32)


def _filter(images: jax.Array, kernel: np.ndarray) -> jax.Array:
  """Each channel of [B, H, W, C] correlated with a square `kernel`, borders reflected (OpenCV's
  default, BORDER_REFLECT_101)."""
  half = kernel.shape[0] // 2
  padded = jnp.pad(images, ((0, 0), (half, half), (half, half), (0, 0)), mode="reflect")
  channels = images.shape[-1]
  weights = jnp.tile(jnp.asarray(kernel, images.dtype)[:, :, None, None], (1, 1, 1, channels))
  return jax.lax.conv_general_dilated(padded, weights, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels)


def _zoom(images: jax.Array, factor: float) -> jax.Array:
  """[B, H, W, C] magnified `factor` times about the centre, bilinear, the same size."""
  height, width = images.shape[1:3]
  rows = (height - 1) / 2 + (jnp.arange(height) - (height - 1) / 2) / factor
  cols = (width - 1) / 2 + (jnp.arange(width) - (width - 1) / 2) / factor
  rows, cols = jnp.meshgrid(rows, cols, indexing="ij")
  zoom_channel = lambda channel: jax.scipy.ndimage.map_coordinates(channel, [rows, cols], order=1, mode="nearest")
  return jax.vmap(jax.vmap(zoom_channel, in_axes=-1, out_axes=-1))(images)


def box_resize_matrix(size_in: int, size_out: int) -> np.ndarray:
  """[size_out, size_in]: each output pixel the mean of the input it covers, partly covered pixels
  weighted by their overlap (PIL's BOX filter)."""
  scale = size_in / size_out
  starts, ends = np.arange(size_out)[:, None] * scale, (np.arange(size_out)[:, None] + 1) * scale
  pixels = np.arange(size_in)[None, :]
  overlap = np.clip(np.minimum(ends, pixels + 1) - np.maximum(starts, pixels), 0.0, None)
  return (overlap / scale).astype(np.float32)


def _pixelate(images: jax.Array, fraction: float) -> jax.Array:
  height, width = images.shape[1:3]
  small_h, small_w = int(height * fraction), int(width * fraction)
  down_h, down_w = box_resize_matrix(height, small_h), box_resize_matrix(width, small_w)
  up_h, up_w = box_resize_matrix(small_h, height), box_resize_matrix(small_w, width)
  rows, cols = jnp.asarray(up_h @ down_h), jnp.asarray(up_w @ down_w)
  return jnp.einsum("ih,bhwc,jw->bijc", rows, images, cols)


def plasma_fractal(rng: jax.Array, size: int, decay: float) -> jax.Array:
  """CIFAR-10-C's fog layer: a [size, size] diamond-square height map in [0, 1] (size a power of 2),
  wrapping around at the borders; the random displacement shrinks by `decay` at each halving of
  the step.

  Each level holds the lattice of points computed so far and adds, per lattice cell, its centre
  (mean of the 4 corners), the midpoint of its top edge (mean of the 2 corners and the 2 centres
  beside it) and of its left edge, each displaced at random; interleaving the four lattices gives
  the next level's, twice as fine.
  """
  if size & (size - 1):
    raise ValueError(f"The plasma fractal needs a power-of-2 size, got {size}.")
  # One draw for every new point of every level (3 n^2 at lattice size n: size^2 - 1 in all),
  # cheaper to compile than a draw per level.
  uniforms = iter(jnp.split(jax.random.uniform(rng, (size * size - 1,), minval=-1.0, maxval=1.0), np.cumsum([3 * 4**k for k in range(size.bit_length() - 1)])[:-1]))
  lattice, wibble = jnp.zeros((1, 1), jnp.float32), 100.0
  while lattice.shape[0] < size:
    n = lattice.shape[0]
    centre_noise, row_noise, column_noise = next(uniforms).reshape(3, n, n) * wibble**2

    squares = lattice + jnp.roll(lattice, -1, axis=0)
    centres = (squares + jnp.roll(squares, -1, axis=1)) / 4 + centre_noise
    # Midpoints between horizontal neighbours (same row as the corners), then vertical ones.
    on_rows = (centres + jnp.roll(centres, 1, axis=0) + lattice + jnp.roll(lattice, -1, axis=1)) / 4 + row_noise
    on_columns = (centres + jnp.roll(centres, 1, axis=1) + lattice + jnp.roll(lattice, -1, axis=0)) / 4 + column_noise
    even_rows = jnp.stack([lattice, on_rows], axis=-1).reshape(n, 2 * n)
    odd_rows = jnp.stack([on_columns, centres], axis=-1).reshape(n, 2 * n)
    lattice = jnp.stack([even_rows, odd_rows], axis=1).reshape(2 * n, 2 * n)
    wibble /= decay
  lattice = lattice - lattice.min()
  return lattice / lattice.max()


def _fog(rng: jax.Array, images: jax.Array, strength: float, decay: float) -> jax.Array:
  height, width = images.shape[1:3]
  size = 1 << (max(height, width) - 1).bit_length()
  layers = jax.vmap(lambda key: plasma_fractal(key, size, decay))(jax.random.split(rng, images.shape[0]))
  brightest = images.max(axis=(1, 2, 3), keepdims=True)
  fogged = images + strength * layers[:, :height, :width, None]
  return fogged * brightest / (brightest + strength)


def corrupt(rng: jax.Array, images: jax.Array, name: str, severity: int) -> jax.Array:
  """`images` [B, H, W, C] in [0, 1] under corruption `name` at `severity` (1-5), in [0, 1]."""
  if name not in SEVERITIES:
    raise ValueError(f"Unknown corruption {name!r}; choose from {sorted(SEVERITIES)}.")
  if not 1 <= severity <= 5:
    raise ValueError(f"Corruption severities are 1 to 5, got {severity}.")
  level = SEVERITIES[name][severity - 1]
  if name == "gaussian_noise":
    out = images + level * jax.random.normal(rng, images.shape, images.dtype)
  elif name == "shot_noise":
    out = jax.random.poisson(rng, images * level).astype(images.dtype) / level
  elif name == "defocus_blur":
    out = _filter(images, defocus_kernel(*level))
  elif name == "zoom_blur":
    factors = 1.0 + 0.01 * np.arange(round((level - 1.0) / 0.01))  # np.arange(1, level, 0.01)
    out = (images + sum(_zoom(images, float(f)) for f in factors)) / (len(factors) + 1)
  elif name == "fog":
    out = _fog(rng, images, *level)
  elif name == "pixelate":
    out = _pixelate(images, level)
  elif name == "impulse_noise":
    hit_rng, salt_rng = jax.random.split(rng)
    hit = jax.random.uniform(hit_rng, images.shape) < level
    out = jnp.where(hit, jax.random.bernoulli(salt_rng, 0.5, images.shape).astype(images.dtype), images)
  elif name == "gaussian_blur":
    size = 2 * int(np.ceil(3 * level)) + 1
    out = jax.vmap(lambda image: augment.gaussian_blur(image, level, size))(images)
  elif name == "contrast":
    mean = images.mean(axis=(1, 2, 3), keepdims=True)
    out = (images - mean) * level + mean
  elif name == "brightness":
    out = images + level
  else:
    raise AssertionError(name)
  return jnp.clip(out, 0.0, 1.0)


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
  """Area under the ROC curve of telling `out_scores` (positives) from `in_scores` by a higher
  score, in percent: the probability that a random OOD example outscores a random
  in-distribution one, ties counting half."""
  from sklearn import metrics  # pylint: disable=g-import-not-at-top  (slow to import)

  labels = np.concatenate([np.zeros(len(in_scores)), np.ones(len(out_scores))])
  return float(100.0 * metrics.roc_auc_score(labels, np.concatenate([in_scores, out_scores])))


def ood_scores(class_logits: np.ndarray, rotation_loss: np.ndarray) -> dict[str, np.ndarray]:
  """Higher means more likely out of distribution: -max softmax, and the paper's rotation loss
  minus KL(U || p) (a confident prediction, far from uniform, speaks for in-distribution)."""
  log_probs = jax.nn.log_softmax(jnp.asarray(class_logits, jnp.float32))
  num_classes = class_logits.shape[-1]
  kl_from_uniform = -jnp.log(num_classes) - log_probs.mean(-1)
  return {"msp": -np.asarray(jnp.exp(log_probs).max(-1)), "rotation_minus_kl": np.asarray(rotation_loss) - np.asarray(kl_from_uniform)}


def evaluate(config, method, mesh, params, extra, test_arrays: dict, data_spec: DataSpec) -> dict[str, float]:
  """Clean and corrupted accuracy and OOD AUROCs of `method.classify`, for eval/summary.json."""
  cfg = config.robustness
  sharded = parallel.batch_sharded(mesh)
  devices = mesh.devices.size
  chunk = max(devices, config.eval.batch_size // devices * devices)

  predict = jax.jit(lambda params, extra, images: method.classify(params, extra, augment.normalize(images)))

  def run(images_uint8: np.ndarray, transform=None, fn=predict) -> np.ndarray | tuple[np.ndarray, ...]:
    """`fn`'s outputs over every chunk of the images (the last padded), each transformed first."""
    outputs = []
    for start in range(0, len(images_uint8), chunk):
      part = images_uint8[start:start + chunk]
      valid = len(part)
      if valid < chunk:
        part = np.concatenate([part, np.repeat(part[-1:], chunk - valid, axis=0)])
      images = jax.device_put(augment.to_float_image(jnp.asarray(part)), sharded)
      if transform is not None:
        images = transform(jax.random.fold_in(jax.random.key(cfg.corruption_seed), start), images)
      outputs.append(jax.tree.map(lambda x: np.asarray(x)[:valid], jax.device_get(fn(params, extra, images))))
    return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)

  labels = test_arrays["label"]
  results = {}
  logits, rotation = run(test_arrays["image"])
  results["robustness_clean_top1"] = float(100.0 * np.mean(logits.argmax(-1) == labels))
  # Under corruptions only the class matters: the upright images alone, not their rotations.
  predict_class = jax.jit(lambda params, extra, images: method.class_logits(params, extra, augment.normalize(images)))
  corrupted = []
  for name in cfg.corruptions:
    for severity in range(1, 6):
      transform = jax.jit(lambda rng, images, name=name, severity=severity: corrupt(rng, images, name, severity))
      top1 = float(100.0 * np.mean(run(test_arrays["image"], transform, predict_class).argmax(-1) == labels))
      results[f"robustness_{name}_{severity}_top1"] = top1
      corrupted.append(top1)
  results["robustness_corrupted_top1"] = float(np.mean(corrupted))
  if cfg.ood_data:
    ood_spec = dataclasses.replace(data_spec, name=cfg.ood_data)
    ood = pipeline.load_eval_arrays(sources.make_source(ood_spec, ood_spec.eval_split), data_spec.image_size, config.eval.max_test_examples)
    ood_logits, ood_rotation = run(ood["image"])
    in_scores, out_scores = ood_scores(logits, rotation), ood_scores(ood_logits, ood_rotation)
    for score in in_scores:
      results[f"robustness_ood_auroc_{score}"] = auroc(in_scores[score], out_scores[score])
  return results
