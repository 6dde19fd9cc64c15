"""Evaluation protocols on a pretrained backbone, run like pretraining:

    python -m jaxssl.main --config=configs/eval/knn.py --config.backbone=runs/simclr --workdir=runs/simclr_knn
    python -m jaxssl.main --config=configs/eval/linear.py --config.backbone=runs/simclr --workdir=runs/simclr_linear

`config.backbone` is a finished run's workdir (or its `export/backbone/`). The data is the
pretraining's unless `config.data.name` says otherwise. Each protocol writes
`WORKDIR/eval/<protocol>.json` with its exact settings, the split sizes and every setting's score.

* `knn`: weighted cosine kNN (Wu et al. 2018) for every k and temperature of the config, from one
  similarity computation.
* `linear`: linear heads on the frozen backbone's features (standardised with the training
  split's statistics): SGD with momentum and a cosine schedule for every learning rate x weight
  decay of the grid, all heads trained in ONE compiled pass (`jax.vmap` over the heads). Mode
  'features' (fast) trains on pre-extracted features of the centred images; mode 'augmented' (the
  standard protocol) on features of a fresh random crop and flip of every image at every step. The
  best setting is chosen on a validation split held out of the training split (every
  `validation_every`-th example of each class), then reported on the test split.
* `finetune`: the whole backbone and a new linear head trained on the training split (minus the
  same validation split), with the standard random crop and flip, layer-wise learning-rate decay
  and BatchNorm 'train' or 'frozen' (`jaxssl.evaluation.finetune`); validation and test top-1.
* `semisup`: the same fine-tuning on 1% and 10% of the training labels (`config.semisup.fractions`),
  a stratified subset drawn with the seed and saved as `eval/semisup_<pct>pct_indices.txt`, or
  read from `config.semisup.subset_files` (one training-split index per line, or one file name
  per line as in the standard ImageNet 1% / 10% lists); test top-1.
Batches and feature chunks are split over every device, as in pretraining. The fine-tuning
protocols and the augmented linear probe checkpoint under WORKDIR and resume like pretraining.

A video method's backbone (BraVe, GDT, VideoMoCo) is evaluated on clips of its pretraining's
narrow view: centred for kNN and the linear probe, randomly cropped and flipped (the same crop in
every frame) for fine-tuning; the JSON records the clip's frames, stride, size and modality.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxssl import logs, parallel
from jaxssl.data import pipeline, sources
from jaxssl.data.base import DataSpec
from jaxssl.errors import UserError
from jaxssl.evaluation import finetune, knn
from jaxssl.evaluation.pretrained import Pretrained
from jaxssl.evaluation.pretrained import load as load_pretrained
from jaxssl.transforms import augment

PROTOCOLS = ("knn", "linear", "finetune", "semisup")


# ----------------------------------------------------------------------------------------------
# kNN over a grid of k and temperatures.
# ----------------------------------------------------------------------------------------------


def knn_sweep(train_features, train_labels, test_features, test_labels, ks, temperatures, chunk_size: int = 1024) -> dict[str, float]:
  """Top-1 (%) of weighted cosine kNN for every (k, T): {'k=20,T=0.07': ...}. The similarities
  and the max(k) nearest neighbours are computed once per test chunk and shared by all settings."""
  train, test = knn._normalize(train_features), knn._normalize(test_features)  # pylint: disable=protected-access
  train_labels = np.asarray(train_labels, np.int64)
  num_classes = int(max(train_labels.max(), np.max(test_labels)) + 1)
  largest = min(max(ks), len(train))
  correct = {(k, t): 0 for k in ks for t in temperatures}
  for start in range(0, len(test), chunk_size):
    similarity = test[start:start + chunk_size] @ train.T
    neighbours = np.argsort(-similarity, axis=1, kind="stable")[:, :largest]  # nearest first
    nearest = np.take_along_axis(similarity, neighbours, axis=1)
    labels = train_labels[neighbours]
    truth = np.asarray(test_labels[start:start + chunk_size])
    rows = np.arange(len(similarity))[:, None]
    for t in temperatures:
      weights = np.exp(nearest / t)
      for k in ks:
        votes = np.zeros((len(similarity), num_classes), np.float64)
        np.add.at(votes, (rows, labels[:, :min(k, largest)]), weights[:, :min(k, largest)])
        correct[(k, t)] += int(np.sum(np.argmax(votes, axis=1) == truth))
  return {f"k={k},T={t:g}": 100.0 * c / len(test) for (k, t), c in correct.items()}


# ----------------------------------------------------------------------------------------------
# Linear heads, a grid of them in one compiled pass.
# ----------------------------------------------------------------------------------------------


def held_out_split(labels: np.ndarray, every: int) -> tuple[np.ndarray, np.ndarray]:
  """(train indices, validation indices): every `every`-th example of each class is validation."""
  validation = sources.held_out_indices(np.asarray(labels), every)
  return np.setdiff1d(np.arange(len(labels)), validation), validation


def _sgd_head_step(head, momentum, features, labels, learning_rate, weight_decay, fraction_done):
  """One SGD step of a linear head (w [D, C], b [C]): momentum 0.9, the learning rate on a cosine
  from `learning_rate` to 0 over the run, weight decay on the weights (not the bias), softmax
  cross-entropy. Returns (head, momentum, the loss before the step)."""

  def loss(w, b):
    logits = features @ w + b
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))

  w, b = head
  value, (gw, gb) = jax.value_and_grad(loss, argnums=(0, 1))(w, b)
  gw = gw + weight_decay * w
  rate = learning_rate * 0.5 * (1.0 + jnp.cos(jnp.pi * fraction_done))
  mw, mb = 0.9 * momentum[0] + gw, 0.9 * momentum[1] + gb
  return (w - rate * mw, b - rate * mb), (mw, mb), value


# One step of every head of the grid on the same features: vmapped over heads and their settings.
_grid_step = jax.vmap(_sgd_head_step, in_axes=(0, 0, None, None, 0, 0, None))


def _grid(learning_rates, weight_decays) -> tuple[list[tuple[float, float]], jax.Array, jax.Array]:
  grid = [(lr, wd) for lr in learning_rates for wd in weight_decays]
  lrs, wds = (jnp.asarray([g[i] for g in grid], jnp.float32) for i in range(2))
  return grid, lrs, wds


def _zero_heads(count: int, dim: int, num_classes: int):
  return jnp.zeros((count, dim, num_classes)), jnp.zeros((count, num_classes))


def train_linear_heads(features, labels, learning_rates, weight_decays, *, num_classes: int, epochs: int, batch_size: int, seed: int):
  """Trains one linear head per (learning rate, weight decay) pair on the same mini-batches of
  pre-extracted features (`_sgd_head_step`); `jax.vmap` over the heads, `jax.lax.scan` over the
  steps: one compilation. Returns ((weights [G, D, C], biases [G, C]), grid)."""
  features = jnp.asarray(features, jnp.float32)
  labels = jnp.asarray(labels, jnp.int32)
  count, dim = features.shape
  steps_per_epoch = max(1, count // batch_size)
  total = epochs * steps_per_epoch
  rng = np.random.default_rng(seed)
  order = np.concatenate([rng.permutation(count)[:steps_per_epoch * batch_size] for _ in range(epochs)]).reshape(total, -1)
  grid, lrs, wds = _grid(learning_rates, weight_decays)

  def step(carry, inputs):
    heads, momenta = carry
    index, t = inputs
    heads, momenta, _ = _grid_step(heads, momenta, features[index], labels[index], lrs, wds, t / total)
    return (heads, momenta), None

  zeros = _zero_heads(len(grid), dim, num_classes)
  (heads, _), _ = jax.jit(lambda: jax.lax.scan(step, (zeros, zeros), (jnp.asarray(order), jnp.arange(total))))()
  return heads, grid


def train_linear_heads_augmented(pretrained: Pretrained, images: np.ndarray, labels: np.ndarray, learning_rates, weight_decays, *,
                                 mean: np.ndarray, std: np.ndarray, num_classes: int, epochs: int, batch_size: int, padding: int,
                                 seed: int, mesh: jax.sharding.Mesh, checkpoint_dir: str | None, checkpoint_every: int, log: Callable):
  """The standard linear protocol: every step a fresh random crop (of the image reflect-padded by
  `padding`) and flip of each training image, through the frozen backbone (BN on its running
  statistics), standardised by (`mean`, `std`); then the same head step as `train_linear_heads`
  for every setting of the grid. Batches are split over the devices of `mesh`; the run
  checkpoints and resumes like fine-tuning. Returns ((weights [G, D, C], biases [G, C]), grid)."""
  grid, lrs, wds = _grid(learning_rates, weight_decays)
  batch_size = finetune.sharded_batch_size(batch_size, len(images), mesh)
  total = max(1, epochs * max(1, len(images) // batch_size))
  mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)

  def step(state, batch_images, batch_labels, rng):
    crops = finetune.random_crop_flip(jax.random.fold_in(rng, state["step"]), batch_images, padding)
    features = (pretrained.embed(pretrained.params, pretrained.batch_stats, augment.normalize(crops)) - mean) / std
    features = jax.lax.stop_gradient(features)  # the backbone is frozen
    heads, momenta, losses = _grid_step(state["heads"], state["momenta"], features, batch_labels, lrs, wds, state["step"] / total)
    return {"step": state["step"] + 1, "heads": heads, "momenta": momenta}, jnp.min(losses)  # the best head's

  zeros = _zero_heads(len(grid), mean.shape[0], num_classes)
  state = {"step": jnp.zeros((), jnp.int32), "heads": zeros, "momenta": zeros}
  state = finetune.run_steps(
      step, state, images, labels, finetune.batch_order(len(images), batch_size, total, seed), seed=seed, mesh=mesh,
      checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, log=log, name="linear probe",
  )
  return state["heads"], grid


def heads_top1(heads, features, labels) -> np.ndarray:
  """Top-1 (%) of each head [G] on (features, labels)."""
  weights, biases = heads
  predictions = jnp.argmax(jnp.einsum("nd,gdc->gnc", jnp.asarray(features, jnp.float32), weights) + biases[:, None], axis=-1)
  return np.asarray(100.0 * jnp.mean(predictions == jnp.asarray(labels)[None], axis=1))


# ----------------------------------------------------------------------------------------------
# Running a protocol.
# ----------------------------------------------------------------------------------------------


def _backbone_directory(path: str) -> str:
  path = os.path.abspath(os.path.expanduser(path))
  exported = os.path.join(path, "export", "backbone")
  for candidate in (exported, path):
    if os.path.exists(os.path.join(candidate, "config.json")):
      return candidate
  raise UserError(f"config.backbone '{path}' holds no exported backbone (WORKDIR/export/backbone is written when a run finishes); point it at a finished run's workdir.")


def read_subset(path: str, count: int, training_names: Callable[[], list[str] | None] = lambda: None) -> np.ndarray:
  """Training-array positions listed in a subset file: one index per line, or one file name per
  line (the first word; e.g. SimCLR's ImageNet 1% / 10% lists, 'n01440764_10026.JPEG'), matched
  against `training_names()`, the file names of the loaded training examples in order."""
  try:
    with open(path) as f:
      entries = [line.split()[0] for line in f if line.strip()]
  except OSError as e:
    raise UserError(f"The subset file '{path}' cannot be read ({e}); fix the path in config.semisup.subset_files.") from e
  if not entries:
    raise UserError(f"The subset file '{path}' is empty; list one training index or file name per line.")
  if all(entry.lstrip("-").isdigit() for entry in entries):
    indices = np.asarray([int(entry) for entry in entries], np.int64)
    if indices.min() < 0 or indices.max() >= count:
      raise UserError(f"The subset file '{path}' names indices outside the {count} training examples; it was written for other data.")
    return np.unique(indices)
  names = training_names()
  if names is None:
    raise UserError(f"The subset file '{path}' lists file names, but this data has none; list training indices instead.")
  position = {name: i for i, name in enumerate(names)}
  missing = [entry for entry in entries if entry not in position]
  if missing:
    raise UserError(
        f"{len(missing)} of the {len(entries)} file names in '{path}' (e.g. '{missing[0]}') are not among the "
        f"{len(names)} training examples loaded; raise config.max_train_examples to the training split's size, or use the split the list was made for."
    )
  return np.unique(np.asarray([position[entry] for entry in entries], np.int64))


def _finetune_protocol(config, pretrained: Pretrained, train_arrays: dict, test_arrays: dict, workdir: str, training_names: Callable,
                       mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """Fine-tunes the backbone on the training split (`finetune`) or on label fractions of it
  (`semisup`); returns the result fields (split sizes, scores, best setting and top-1)."""
  backbone, params, batch_stats = pretrained.backbone, pretrained.params, pretrained.batch_stats
  images, labels = train_arrays[pretrained.input_key], train_arrays["label"]
  num_classes = int(max(labels.max(), test_arrays["label"].max()) + 1)
  cfg = config.finetune
  log = lambda message: print(message, flush=True)
  tune = lambda images, labels, checkpoint_dir: finetune.finetune(
      backbone, params, batch_stats, images, labels, num_classes=num_classes, cfg=cfg, seed=config.seed,
      mesh=mesh, checkpoint_dir=checkpoint_dir, log=log, backbone_input=pretrained.backbone_input,
  )
  top1 = lambda p, s, images, labels: finetune.top1(backbone, p, s, images, labels, config.batch_size, mesh, backbone_input=pretrained.backbone_input)
  test = lambda p, s: top1(p, s, test_arrays[pretrained.input_key], test_arrays["label"])
  if config.protocol == "finetune":
    fit, validation = held_out_split(labels, cfg.validation_every)
    tuned, stats = tune(images[fit], labels[fit], os.path.join(workdir, "checkpoints_finetune"))
    setting = f"lr={cfg.learning_rate:g},wd={cfg.weight_decay:g},layer_decay={cfg.layer_decay:g},bn={cfg.batch_norm}"
    validation_top1 = top1(tuned, stats, images[validation], labels[validation])
    test_top1 = test(tuned, stats)
    return {
        "split_sizes": {"train": len(fit), "validation": len(validation), "test": len(test_arrays["label"])},
        "scores": {setting: {"validation_top1": validation_top1, "test_top1": test_top1}},
        "best_setting": setting,
        "best_top1": test_top1,
    }
  files = dict(config.semisup.get("subset_files", {}) or {})
  scores, sizes = {}, {"test": len(test_arrays["label"])}
  for fraction in config.semisup.fractions:
    name = f"{fraction * 100:g}%"
    source = files.get(f"{fraction:g}") or files.get(name)
    subset = read_subset(source, len(labels), training_names) if source else finetune.stratified_subset(labels, fraction, config.seed)
    path = finetune.subset_path(workdir, fraction)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savetxt(path, subset, fmt="%d")
    log(f"semisup {name}: fine-tuning on {len(subset)} of {len(labels)} labelled examples (indices in {path})")
    tuned, stats = tune(images[subset], labels[subset], os.path.join(workdir, f"checkpoints_semisup_{fraction * 100:g}pct"))
    scores[name] = {"test_top1": test(tuned, stats), "labelled_examples": int(len(subset)), "subset_file": os.path.basename(path)}
    sizes[f"train_{name}"] = int(len(subset))
  best = max(scores, key=lambda k: scores[k]["labelled_examples"])  # the largest fraction
  return {"split_sizes": sizes, "scores": scores, "best_setting": best, "best_top1": scores[best]["test_top1"]}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Runs `config.protocol` on `config.backbone`; writes and returns WORKDIR/eval/<protocol>.json."""
  start = time.time()
  if config.protocol not in PROTOCOLS:
    raise UserError(f"config.protocol '{config.protocol}' is not known; choose one of {PROTOCOLS}.")
  directory = _backbone_directory(config.backbone)
  pretraining = logs.read_json(os.path.join(directory, "config.json"), {})
  backbone = load_pretrained(directory)
  mesh = parallel.make_mesh()  # every protocol splits its batches over all devices, as training does
  data = dict(pretraining.get("data", {}))
  data.update({k: v for k, v in config.data.to_dict().items() if v})  # empty or 0: the pretraining's
  spec = DataSpec.from_config(data)
  train_source = sources.make_source(spec, spec.train_split)
  train_arrays = backbone.load_arrays(train_source, spec.image_size, config.max_train_examples)

  def training_names():
    """File names of the loaded training records (those `load_eval_arrays` picked), in order."""
    count = len(train_source)
    loaded = config.max_train_examples
    indices = pipeline.evenly_spaced_indices(count, loaded) if loaded and loaded < count else np.arange(count)
    return sources.record_names(train_source, indices)

  test_arrays = backbone.load_arrays(sources.make_source(spec, spec.eval_split), spec.image_size, config.max_test_examples)
  result = {"protocol": config.protocol, "backbone": directory, "data": spec.name, "image_size": spec.image_size, "settings": config.to_dict()}
  if backbone.clip_view is not None:
    view = backbone.clip_view
    result["clip"] = {"frames": view.num_frames, "stride": view.stride, "size": view.size, "modality": view.modality}
  if config.protocol in ("knn", "linear"):
    train_features = backbone.features(train_arrays[backbone.input_key], config.batch_size, mesh)
    test_features = backbone.features(test_arrays[backbone.input_key], config.batch_size, mesh)

  if config.protocol == "knn":
    scores = knn_sweep(train_features, train_arrays["label"], test_features, test_arrays["label"], list(config.knn.ks), list(config.knn.temperatures))
    best = max(scores, key=scores.get)
    result.update(split_sizes={"train": len(train_features), "test": len(test_features)}, scores=scores, best_setting=best, best_top1=scores[best])
  elif config.protocol in ("finetune", "semisup"):
    result.update(_finetune_protocol(config, backbone, train_arrays, test_arrays, workdir, training_names, mesh))
  else:
    cfg = config.linear
    fit, validation = held_out_split(train_arrays["label"], cfg.validation_every)
    mean, std = train_features[fit].mean(0), train_features[fit].std(0) + 1e-6
    standardise = lambda f: (f - mean) / std
    num_classes = int(max(train_arrays["label"].max(), test_arrays["label"].max()) + 1)
    grid_settings = dict(num_classes=num_classes, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=config.seed)
    if cfg.mode == "features":
      heads, grid = train_linear_heads(
          standardise(train_features[fit]), train_arrays["label"][fit], list(cfg.learning_rates), list(cfg.weight_decays), **grid_settings
      )
    elif cfg.mode == "augmented":
      heads, grid = train_linear_heads_augmented(
          backbone, train_arrays[backbone.input_key][fit], train_arrays["label"][fit], list(cfg.learning_rates), list(cfg.weight_decays),
          mean=mean, std=std, padding=max(1, cfg.crop_padding), mesh=mesh, checkpoint_dir=os.path.join(workdir, "checkpoints_linear"),
          checkpoint_every=cfg.checkpoint_every, log=lambda message: print(message, flush=True), **grid_settings,
      )
    else:
      raise UserError(f"config.linear.mode is '{cfg.mode}'; choose 'features' (fast, on pre-extracted features) or 'augmented' (random crops each step).")
    validation_top1 = heads_top1(heads, standardise(train_features[validation]), train_arrays["label"][validation])
    test_top1 = heads_top1(heads, standardise(test_features), test_arrays["label"])
    best = int(np.argmax(validation_top1))
    result.update(
        split_sizes={"train": len(fit), "validation": len(validation), "test": len(test_features)},
        scores={f"lr={lr:g},wd={wd:g}": {"validation_top1": float(v), "test_top1": float(t)} for (lr, wd), v, t in zip(grid, validation_top1, test_top1)},
        best_setting=f"lr={grid[best][0]:g},wd={grid[best][1]:g}",
        best_top1=float(test_top1[best]),
    )
  result["wall_seconds"] = round(time.time() - start, 1)
  path = os.path.join(workdir, "eval", f"{config.protocol}.json")
  logs.write_json(path, result)
  print(f"{config.protocol}: best {result['best_setting']} -> top-1 {result['best_top1']:.1f}% (wrote {path})", flush=True)
  return result
