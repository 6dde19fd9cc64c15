"""Evaluation of a backbone on held-out labelled data: features, kNN, linear probe, baselines.

`Evaluator.full` gives every number of `eval/summary.json`: the trained encoder, the same
architecture at random initialisation, and raw pixels; `Evaluator.knn_top1` the cheaper kNN
during training. What is embedded follows the method's declared inputs (`jaxssl.inputs`).
"""

from __future__ import annotations

from typing import Callable

import jax
import ml_collections
import numpy as np
from absl import logging

from jaxssl import inputs, parallel
from jaxssl.data import pipeline, sources, video
from jaxssl.data.base import DataSpec
from jaxssl.evaluation import knn, linear
from jaxssl.transforms import augment


class FeatureExtractor:
  """Backbone features of uint8 image (or clip) arrays, computed in fixed-size sharded chunks.

  Every process holds the whole array and gets all the features back (they are small), so the
  host-side kNN and linear probes see the same numbers in every process of a multi-process run.
  """

  def __init__(self, method, mesh: jax.sharding.Mesh, chunk_size: int, embed_fn: Callable | None = None):
    """`embed_fn(params, extra, inputs, train=...)` embeds other inputs than images (e.g. a
    method's `embed_audio` of waveforms); by default `method.embed` of normalised images."""
    devices = mesh.devices.size
    self.chunk_size = max(devices, chunk_size // devices * devices)
    self._sharded = sharded = parallel.batch_sharded(mesh)
    replicated = parallel.replicated(mesh)

    def embed(params, extra, images, train):
      if embed_fn is not None:
        return embed_fn(params, extra, images, train=train)
      return method.embed(params, extra, augment.normalize(images), train=train)

    # Parameters keep whatever sharding the train state gave them (replicated, or split by FSDP).
    self._embed = jax.jit(
        embed,
        static_argnums=3,
        in_shardings=(None, None, sharded),
        out_shardings=replicated,
    )

  def __call__(self, params, extra, images: np.ndarray, *, batch_norm_statistics: bool = False) -> np.ndarray:
    """Features [N, D]. With `batch_norm_statistics`, BN normalises each chunk by its own
    statistics (used for the random-init baseline, whose running averages are meaningless)."""
    outputs = []
    for start in range(0, len(images), self.chunk_size):
      chunk = images[start : start + self.chunk_size]
      valid = len(chunk)
      if valid < self.chunk_size:  # pad so the function compiles once
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.chunk_size - valid, axis=0)])
      chunk = parallel.from_replicated_host_array(chunk, self._sharded)
      features = self._embed(params, extra, chunk, batch_norm_statistics)
      outputs.append(np.asarray(jax.device_get(features))[:valid])
    return np.concatenate(outputs)


def pixel_features(images: np.ndarray, mean: np.ndarray) -> np.ndarray:
  """Raw pixels in [0, 1], centred by the training mean so cosine similarity is meaningful."""
  return images.reshape(len(images), -1).astype(np.float32) / 255.0 - mean


class Evaluator:
  """kNN / linear-probe evaluation of the backbone on held-out labelled data."""

  def __init__(self, config: ml_collections.ConfigDict, method, mesh, train_arrays: dict, test_arrays: dict):
    self.config = config.eval
    self.input_key = getattr(method, "eval_input_key", "image")  # 'clip' for video methods
    self.train = train_arrays
    self.test = test_arrays
    self.num_classes = int(max(train_arrays["label"].max(), test_arrays["label"].max()) + 1)
    self.extract = FeatureExtractor(method, mesh, config.eval.batch_size)
    # A second backbone's own kNN (GDT's audio network), when the method has one and the data sound.
    self.extract_audio = (
        FeatureExtractor(method, mesh, config.eval.batch_size, method.embed_audio)
        if hasattr(method, "embed_audio") and "audio" in train_arrays and "audio" in test_arrays else None
    )
    self.trained_features = None  # (train, test) features of the last `full` evaluation

  def _knn(self, train_features, test_features, train_labels=None) -> float:
    return knn.knn_top1(
        train_features,
        self.train["label"] if train_labels is None else train_labels,
        test_features,
        self.test["label"],
        k=self.config.knn_k,
        temperature=self.config.knn_temperature,
        num_classes=self.num_classes,
    )

  def features(self, params, extra, *, batch_norm_statistics: bool = False):
    kwargs = dict(batch_norm_statistics=batch_norm_statistics)
    return (
        self.extract(params, extra, self.train[self.input_key], **kwargs),
        self.extract(params, extra, self.test[self.input_key], **kwargs),
    )

  def knn_top1(self, params, extra, max_train_examples: int | None = None, **kwargs) -> float:
    """kNN top-1 (%); `max_train_examples` evaluates against an evenly spaced subset (faster)."""
    train_images, train_labels = self.train[self.input_key], self.train["label"]
    if max_train_examples and max_train_examples < len(train_images):
      index = np.linspace(0, len(train_images) - 1, max_train_examples).round().astype(int)
      train_images, train_labels = train_images[index], train_labels[index]
    train_features = self.extract(params, extra, train_images, **kwargs)
    test_features = self.extract(params, extra, self.test[self.input_key], **kwargs)
    return self._knn(train_features, test_features, train_labels)

  def full(self, params, extra, random_params, random_extra) -> dict[str, float]:
    """Every number of eval/summary.json: trained, random-init and raw-pixel baselines."""
    results = {}
    train_features, test_features = self.features(params, extra)
    self.trained_features = (train_features, test_features)  # for the feature plots
    results["knn_top1"] = self._knn(train_features, test_features)
    results["linear_top1"] = linear.linear_probe_top1(train_features, self.train["label"], test_features, self.test["label"])
    random_train, random_test = self.features(random_params, random_extra, batch_norm_statistics=True)
    results["knn_top1_random_init"] = self._knn(random_train, random_test)
    results["linear_top1_random_init"] = linear.linear_probe_top1(random_train, self.train["label"], random_test, self.test["label"])
    mean = self.train[self.input_key].reshape(len(self.train[self.input_key]), -1).mean(0) / 255.0
    results["knn_top1_pixels"] = self._knn(pixel_features(self.train[self.input_key], mean), pixel_features(self.test[self.input_key], mean))
    if self.extract_audio is not None:
      audio = lambda p, e, **kw: (self.extract_audio(p, e, self.train["audio"], **kw), self.extract_audio(p, e, self.test["audio"], **kw))
      results["knn_top1_audio"] = self._knn(*audio(params, extra))
      results["knn_top1_audio_random_init"] = self._knn(*audio(random_params, random_extra, batch_norm_statistics=True))
    return results


def eval_array_loader(image_size: int, method) -> Callable:
  """`load(source, max_examples) -> {input key: uint8 array, 'label': ...}` for what the method
  embeds at evaluation: centred narrow clips for `ClipViews`, else resized images."""
  request = getattr(method, "host_inputs", None)
  if isinstance(request, inputs.ClipViews):
    return lambda source, max_examples: video.load_clip_eval_arrays(source, request.narrow, max_examples, with_audio=request.narrow_audio)
  return lambda source, max_examples: pipeline.load_eval_arrays(source, image_size, max_examples)


def make_evaluator(config, method, mesh, train_source, data_spec: DataSpec) -> Evaluator | None:
  if not getattr(train_source, "has_labels", False):
    logging.warning("The training data has no labels; kNN and linear-probe evaluation are skipped.")
    return None
  eval_source = sources.make_source(data_spec, data_spec.eval_split)
  load = eval_array_loader(data_spec.image_size, method)
  train_arrays = load(train_source, config.eval.max_train_examples)
  test_arrays = load(eval_source, config.eval.max_test_examples)
  return Evaluator(config, method, mesh, train_arrays, test_arrays)
