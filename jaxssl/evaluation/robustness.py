"""Robustness and uncertainty of a classifier (Hendrycks et al. 2019's evaluation).

* Common corruptions (after Hendrycks & Dietterich 2019's CIFAR-10-C, whose severity levels 1-5
  are used for 32 px images): Gaussian noise, impulse (salt-and-pepper) noise, Gaussian blur,
  contrast and brightness, each applied to the clean test images on the device.
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
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # fraction of pixels set to 0 or 1
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # blur sigma in pixels
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # contrast kept
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to every channel
}


def corrupt(rng: jax.Array, images: jax.Array, name: str, severity: int) -> jax.Array:
  """`images` [B, H, W, C] in [0, 1] under corruption `name` at `severity` (1-5), in [0, 1]."""
  if name not in SEVERITIES:
    raise ValueError(f"Unknown corruption {name!r}; choose from {sorted(SEVERITIES)}.")
  if not 1 <= severity <= 5:
    raise ValueError(f"Corruption severities are 1 to 5, got {severity}.")
  level = SEVERITIES[name][severity - 1]
  if name == "gaussian_noise":
    out = images + level * jax.random.normal(rng, images.shape, images.dtype)
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
  else:
    out = images + level
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

  def run(images_uint8: np.ndarray, transform=None) -> tuple[np.ndarray, np.ndarray]:
    logits, rotation = [], []
    for start in range(0, len(images_uint8), chunk):
      part = images_uint8[start:start + chunk]
      valid = len(part)
      if valid < chunk:
        part = np.concatenate([part, np.repeat(part[-1:], chunk - valid, axis=0)])
      images = jax.device_put(augment.to_float_image(jnp.asarray(part)), sharded)
      if transform is not None:
        images = transform(jax.random.fold_in(jax.random.key(cfg.corruption_seed), start), images)
      out = jax.device_get(predict(params, extra, images))
      logits.append(np.asarray(out[0])[:valid])
      rotation.append(np.asarray(out[1])[:valid])
    return np.concatenate(logits), np.concatenate(rotation)

  labels = test_arrays["label"]
  results = {}
  logits, rotation = run(test_arrays["image"])
  results["robustness_clean_top1"] = float(100.0 * np.mean(logits.argmax(-1) == labels))
  corrupted = []
  for name in cfg.corruptions:
    for severity in range(1, 6):
      transform = jax.jit(lambda rng, images, name=name, severity=severity: corrupt(rng, images, name, severity))
      top1 = float(100.0 * np.mean(run(test_arrays["image"], transform)[0].argmax(-1) == labels))
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
