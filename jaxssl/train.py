"""The one pretraining loop: mesh, data, init or restore, the jitted step, periodic actions, eval.

`train_step(state, batch, rng) -> (state, metrics)` is the only place gradients are taken; every
method plugs in through `jaxssl.methods.base.Method`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from jaxssl import checkpoint, config_checks, environment, inputs, logs, methods, models, optim, parallel
from jaxssl.data import pipeline, sources, video
from jaxssl.transforms import augment
from jaxssl.data import views as views_lib
from jaxssl.data.base import DataSpec
from jaxssl import workdir as workdir_lib
from jaxssl.errors import UserError
from jaxssl.evaluation import evaluator as evaluator_lib
from jaxssl.evaluation import robustness
from jaxssl.evaluation import monitors, plots
from jaxssl.methods.base import TrainState


# ----------------------------------------------------------------------------------------------
# The train step.
# ----------------------------------------------------------------------------------------------


def create_train_state(method, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
  params, extra = method.init(rng)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), extra=extra)


def make_train_step(method, tx: optax.GradientTransformation, learning_rate: Callable) -> Callable:
  """Returns the pure `train_step(state, batch, rng) -> (state, metrics)`.

  `rng` is the run's base key; each step folds in its own step number, so a resumed run draws
  exactly the augmentations the uninterrupted one would have.
  """

  players = getattr(method, "players", {})

  def train_step(state: TrainState, batch: dict, rng: jax.Array) -> tuple[TrainState, dict]:
    step_rng = jax.random.fold_in(rng, state.step)
    if players:
      (loss, aux), grads = players_value_and_grad(method.loss, players, state.params, state.extra, batch, step_rng, state.step)
    else:
      grad_fn = jax.value_and_grad(method.loss, has_aux=True)
      (loss, aux), grads = grad_fn(state.params, state.extra, batch, step_rng, state.step)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if hasattr(method, "project_params"):  # e.g. SwAV's prototypes back onto the unit sphere
      params = method.project_params(params)
    state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    state = state.replace(extra=method.after_update(state, aux))
    metrics = {
        "loss": loss,
        "learning_rate": learning_rate(state.step - 1),
        "grad_norm": optax.tree.norm(grads),
        **aux["metrics"],
    }
    return state, metrics

  return train_step


def players_value_and_grad(loss_fn: Callable, players: dict, params, *args) -> tuple[tuple[jax.Array, dict], Any]:
  """((main loss, aux), gradients) where each player's modules get the gradient of that player's
  own objective (`aux['objectives'][player.objective]`) and every other module the main loss's.

  One forward pass; one backward pass per player, through `jax.vjp`'s shared residuals.
  """

  def objectives(params):
    loss, aux = loss_fn(params, *args)
    return {optim.MAIN_PLAYER: loss, **{name: aux["objectives"][p.objective] for name, p in players.items()}}, aux

  values, backward, aux = jax.vjp(objectives, params, has_aux=True)
  owners = optim.module_owners(players)
  per_player = {}
  for name in (optim.MAIN_PLAYER, *players):
    cotangent = {k: jnp.ones_like(v) if k == name else jnp.zeros_like(v) for k, v in values.items()}
    (per_player[name],) = backward(cotangent)
  grads = {module: per_player[owners.get(module, optim.MAIN_PLAYER)][module] for module in params}
  return (values[optim.MAIN_PLAYER], aux), grads


def _shard_rows_at(shardings: Any, abstract: Any, path: tuple[str, ...], mesh) -> None:
  """Sets the sharding of the dict leaf at `path` to rows split over devices, if it exists."""
  node = shardings
  if not all(isinstance(abstract, dict) and key in abstract and (abstract := abstract[key]) is not None for key in path):
    return  # e.g. MoCo's queue when its dictionary is a memory bank
  for key in path[:-1]:
    node = node[key]
  node[path[-1]] = jax.tree.map(lambda leaf: parallel.rows_sharded(mesh, leaf), abstract)


def _dict_keys(key_path) -> tuple:
  return tuple(k.key for k in key_path if isinstance(k, jax.tree_util.DictKey))


def state_shardings(method, mesh: jax.sharding.Mesh, abstract_state: TrainState, *, fsdp: bool = False) -> TrainState:
  """Shardings of the train state: replicated, except the leaves a method names as split over
  the data axis by rows: `row_sharded_extra` paths into `extra` (a MoCo queue, an NPID memory
  bank) and `row_sharded_params` paths into `params` (Exemplar's one class per image), whose
  optimizer state (momentum, Adam moments: the leaves under the same path) is split alike.

  With `fsdp`, the parameters, their optimizer state and an EMA copy of them are split
  too (`parallel.fully_sharded`), for models too large to hold whole on every device.
  """
  shardings = jax.tree.map(lambda _: parallel.replicated(mesh), abstract_state)
  if fsdp:
    split = lambda tree: jax.tree.map(lambda leaf: parallel.fully_sharded(mesh, leaf), tree)
    # An EMA copy of the parameters (BYOL's target_params, MoCo's momentum_params, ...) is as large.
    extra = {k: split(v) if k.endswith("_params") else shardings.extra[k] for k, v in abstract_state.extra.items()}
    shardings = shardings.replace(params=split(abstract_state.params), opt_state=split(abstract_state.opt_state), extra=extra)
  for path in getattr(method, "row_sharded_extra", ()):
    _shard_rows_at(shardings.extra, abstract_state.extra, path, mesh)
  param_paths = tuple(getattr(method, "row_sharded_params", ()))
  for path in param_paths:
    _shard_rows_at(shardings.params, abstract_state.params, path, mesh)
  if param_paths:
    def optimizer_leaf(key_path, leaf, sharding):
      keys = _dict_keys(key_path)  # e.g. (..., 'trace', 'classifier', 'weight') for SGD's momentum
      split = any(keys[i:i + len(path)] == path for path in param_paths for i in range(len(keys)))
      return parallel.rows_sharded(mesh, leaf) if split else sharding

    opt_shardings = jax.tree_util.tree_map_with_path(optimizer_leaf, abstract_state.opt_state, shardings.opt_state)
    shardings = shardings.replace(opt_state=opt_shardings)
  return shardings


def jit_train_step(train_step: Callable, mesh: jax.sharding.Mesh, shardings: TrainState | None = None) -> Callable:
  """Jits the step once: state donated (replicated unless `shardings` says otherwise), batch
  split over the data axis."""
  replicated = parallel.replicated(mesh)
  state = replicated if shardings is None else shardings
  return jax.jit(
      train_step,
      in_shardings=(state, parallel.batch_sharded(mesh), replicated),
      out_shardings=(state, replicated),
      donate_argnums=0,
  )


# ----------------------------------------------------------------------------------------------
# The run.
# ----------------------------------------------------------------------------------------------


def prepare_workdir(workdir: str) -> str:
  workdir = os.path.abspath(os.path.expanduser(workdir))
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test.{jax.process_index()}")  # one per process: no races
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise UserError(f"The workdir '{workdir}' is not writable ({e.strerror}); pass a --workdir you can write to.") from None
  return workdir


def _num_classes(config: ml_collections.ConfigDict, source) -> int:
  """Classes for the online probe: config.data.num_classes, else what the source knows (0: none)."""
  if config.data.num_classes:
    return int(config.data.num_classes)
  if not getattr(source, "has_labels", False):
    return 0
  if getattr(source, "num_classes", None):
    return int(source.num_classes)
  if getattr(source, "class_names", None):
    return len(source.class_names)
  if hasattr(source, "arrays"):
    return int(source.arrays["label"].max()) + 1
  return 0


class _StopRequested:
  """Turns SIGTERM / Ctrl-C into a checkpoint-and-exit at the end of the current step."""

  def __init__(self):
    self.requested = False
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread (e.g. inside a notebook worker)
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    if self.requested:
      # A second signal means "now": not even the checkpoint in flight is waited for (its
      # temporary directory is never mistaken for a checkpoint, and the one before it is kept),
      # nor the input pipeline's threads, which can keep an interrupted process alive.
      print(f"Signal {signum} received again: exiting now; the last finished checkpoint is kept.", flush=True)
      os._exit(128 + signum)
    logging.warning("Signal %d received: saving a checkpoint after this step, then stopping.", signum)
    self.requested = True

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


@contextlib.contextmanager
def _finish_saving_on_error(ckpt: checkpoint.Checkpointer):
  """Lets an in-flight asynchronous save complete before an error ends the run, so the last
  good checkpoint is never left half-written."""
  try:
    yield
  except BaseException:
    ckpt.wait()
    raise


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, stop_after_steps: int | None = None, allow_config_change: bool = False
) -> dict:
  """Pretrains `config.method`, evaluates the backbone and writes everything under `workdir`.

  Re-running with the same workdir resumes from the newest checkpoint, data iterator included,
  if the config computes the same thing (`allow_config_change` resumes under a changed one and
  records the change). One run at a time holds the workdir. `stop_after_steps` ends the run
  early (after checkpointing) as if it had been preempted. Returns the summary written to
  WORKDIR/eval/summary.json (empty when the run stopped early).
  """
  start_time = time.time()
  config_checks.check_config(config)  # before the workdir exists: a bad value leaves nothing behind
  workdir = prepare_workdir(workdir)
  if "protocol" in config:  # configs/eval/: evaluate a pretrained backbone
    from jaxssl.evaluation import protocols  # pylint: disable=g-import-not-at-top

    with workdir_lib.exclusive(workdir):
      return protocols.run(config, workdir)
  with workdir_lib.exclusive(workdir):
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.keep_checkpoints)
    workdir_lib.check_resumed_config(workdir, config, ckpt.latest_step() is not None, allow_config_change)
    return _train_and_evaluate(config, workdir, ckpt, start_time, stop_after_steps)


def _train_and_evaluate(config, workdir: str, ckpt: checkpoint.Checkpointer, start_time: float, stop_after_steps: int | None) -> dict:
  mesh = parallel.make_mesh()
  per_process_batch = parallel.check_batch_size(config.batch_size)
  is_chief = jax.process_index() == 0

  data_spec = DataSpec.from_config(config.data)  # config.data parsed once, defaults resolved
  whole_train_split = sources.make_source(data_spec, data_spec.train_split)
  train_source = sources.restrict_to_train_examples(whole_train_split, data_spec.train_examples)
  method = methods.make_method(config, _num_classes(config, whole_train_split), num_train_examples=len(train_source))
  tx = optim.with_players(optim.make_optimizer(config), getattr(method, "players", {}))
  learning_rate = optim.learning_rate_schedule(config)
  base_rng = jax.random.key(config.seed)
  init_rng, step_rng = jax.random.split(base_rng)

  abstract_state = jax.eval_shape(lambda rng: create_train_state(method, tx, rng), init_rng)
  shardings = state_shardings(method, mesh, abstract_state, fsdp=config.get("fsdp", False))
  create = jax.jit(lambda rng: create_train_state(method, tx, rng), out_shardings=shardings)
  data = pipeline.make_train_iterator(
      train_source,
      seed=config.seed,
      per_process_batch_size=per_process_batch,
      view_specs=_host_view_specs(config, method),
      transform=make_host_transform(method, train_source, config),
      **views_lib.local_view_settings(config.get("augment")),
      process_index=jax.process_index(),
      process_count=jax.process_count(),
      worker_count=config.data.worker_count,
  )
  latest = ckpt.latest_step()
  if latest is None:
    state = create(init_rng)
  else:
    abstract = checkpoint.abstract_like(jax.eval_shape(create, init_rng), shardings)
    latest, state, data_state = ckpt.restore_newest_good(abstract)
    data.set_state(data_state)
    logging.info("Resumed from the checkpoint at step %d in %s.", latest, ckpt)
    print(f"Resuming from step {latest} (checkpoint in {workdir}/checkpoints).", flush=True)
  first_step = int(state.step)

  train_step = jit_train_step(make_train_step(method, tx, learning_rate), mesh, shardings)
  batch_sharding = parallel.batch_sharded(mesh)
  log = logs.MetricLog(workdir, first_step)
  evaluator = evaluator_lib.make_evaluator(config, method, mesh, whole_train_split, data_spec)
  knn_history = [r for r in logs.read_json(os.path.join(workdir, "eval", "knn_history.json"), []) if r["step"] <= first_step]
  projection_dim = int(config.model.get("projection_dim", 0) or 0)

  progress = logs.Progress(first_step, config.total_steps)
  pending: list[dict] = []
  view_grid = None
  step = first_step
  last_good_checkpoint = latest

  def flush_metrics(step: int) -> dict | None:
    """Fetches pending per-step metrics, logs them, and stops the run on a non-finite loss."""
    nonlocal pending
    if not pending:
      return None
    per_step = jax.device_get(pending)
    mean = log.write_steps(step - len(per_step) + 1, per_step)
    pending = []
    if not all(math.isfinite(float(m["loss"])) for m in per_step):
      kept = f"the checkpoint at step {last_good_checkpoint} is kept" if last_good_checkpoint else "no checkpoint was written"
      # Only suggest float32 to a run that is not already in it.
      precision = "" if config.model.get("dtype", "float32") == "float32" else " or use config.model.dtype='float32'"
      raise UserError(
          f"The loss became NaN or infinite by step {step} ({kept}); lower "
          f"config.optimizer.base_learning_rate (now {config.optimizer.base_learning_rate}){precision}, then re-run."
      )
    if projection_dim and "embedding_std" in mean:
      warning = monitors.collapse_warning(mean["embedding_std"], projection_dim, step)
      if warning:
        logging.warning(warning)
        print(f"WARNING: {warning}", flush=True)
    return mean

  def save(step: int) -> None:
    nonlocal last_good_checkpoint
    flush_metrics(step)  # never checkpoint a NaN state
    ckpt.save(step, state, data.get_state())
    last_good_checkpoint = step

  with _StopRequested() as stop, _finish_saving_on_error(ckpt):
    while step < config.total_steps:
      local_batch = next(data)
      if view_grid is None and is_chief:
        view_grid = _view_grid(method, local_batch, base_rng)
      batch = parallel.to_global(local_batch, batch_sharding)
      state, metrics = train_step(state, batch, step_rng)
      step += 1
      pending.append(metrics)
      if step % config.log_every == 0 or step == config.total_steps:
        ckpt.check()  # a failed background save stops the run now, not at the end
        mean = flush_metrics(step)
        if is_chief:
          print(progress.line(step, config.batch_size, mean), flush=True)
      if evaluator and config.eval.knn_every and step % config.eval.knn_every == 0 and step < config.total_steps:
        top1 = evaluator.knn_top1(state.params, state.extra, config.eval.knn_during_training_examples)
        knn_history.append({"step": step, "knn_top1": top1})
        log.write_scalars(step, {"knn_top1": top1})
        if is_chief:
          logs.write_json(os.path.join(workdir, "eval", "knn_history.json"), knn_history)
          print(f"step {step}: kNN top-1 {top1:.1f}%", flush=True)
      if step % config.checkpoint_every == 0 or step == config.total_steps:
        save(step)
      if stop.requested or (stop_after_steps is not None and step - first_step >= stop_after_steps):
        if last_good_checkpoint != step:
          save(step)
        ckpt.wait()
        log.close()
        print(f"Stopped at step {step}; re-run the same command to resume from it.", flush=True)
        return {}
  flush_metrics(step)
  ckpt.wait()
  train_seconds = time.time() - start_time

  summary = {"method": config.method, "dataset": data_spec.name, "steps": int(step)}
  if evaluator:
    print("Evaluating: kNN and linear probe of the trained encoder, random init and raw pixels ...", flush=True)
    random_state = create(init_rng)
    summary.update(evaluator.full(state.params, state.extra, random_state.params, random_state.extra))
    if hasattr(method, "classify"):  # a classifier (SSL for robustness): corruptions and OOD detection
      print("Evaluating: accuracy under corruptions and out-of-distribution detection ...", flush=True)
      summary.update(robustness.evaluate(config, method, mesh, state.params, state.extra, evaluator.test, data_spec))
    knn_history.append({"step": int(step), "knn_top1": summary["knn_top1"]})
  summary["train_seconds"] = round(train_seconds, 1)
  summary["wall_seconds"] = round(time.time() - start_time, 1)
  summary["environment"] = environment.describe()  # what the numbers depend on (see jaxssl.environment)
  _write_outputs(workdir, config, summary, log, knn_history, view_grid, state, method, evaluator)
  log.close()
  ckpt.close()
  return summary


def _host_view_specs(config, method) -> list[dict]:
  """Crop settings of the image views; empty for methods that declare other `host_inputs`."""
  if getattr(method, "host_inputs", None) is not None:
    return []
  return pipeline.host_view_specs(config.augment.views)


def make_host_transform(method, source, config=None):
  """The grain transform of the inputs a method declares (`jaxssl.inputs`); None for image crops."""
  request = getattr(method, "host_inputs", None)
  if request is None:
    return None
  if isinstance(request, inputs.ClipViews):
    return video.clip_views_transform(request, source)
  if isinstance(request, inputs.ImagesWithFramePairs):
    image_views = views_lib.MultiViewTransform(pipeline.host_view_specs(config.augment.views), **views_lib.local_view_settings(config.get("augment")))
    return video.frame_pairs_transform(request, image_views)
  raise TypeError(f"{type(method).__name__}.host_inputs is a {type(request).__name__}, which the loop cannot build.")


def _view_grid(method, local_batch, rng, rows: int = 8):
  """(host crops, [augmented view 1, augmented view 2]) of a few examples, for the plot."""
  specs = getattr(method, "view_specs", None)
  if not specs:
    return None
  keys = jax.random.split(jax.random.fold_in(rng, 12345), len(specs))
  views = [np.asarray(augment.augment_images(k, local_batch[f"view{i}"][:rows], s)) for i, (k, s) in enumerate(zip(keys, specs))]
  return local_batch["view0"][:rows] / 255.0, views


def _attention_plot(workdir: str, exported: str, test_arrays: dict, count: int = 4) -> str:
  """DINO's picture for a ViT: the class token's last-block attention on a few test images."""
  from jaxssl import export  # pylint: disable=g-import-not-at-top

  encoder = export.load_backbone(exported)
  images = test_arrays["image"][plots.evenly_spaced(len(test_arrays["image"]), count)]
  maps = np.asarray(jax.jit(lambda x: encoder.class_attention(augment.normalize(x)))(images))
  return plots.plot_class_attention(os.path.join(workdir, "plots", "attention.png"), images, maps)


def _write_outputs(workdir, config, summary, log, knn_history, view_grid, state, method, evaluator) -> None:
  """Summary, plots and the exported backbone. Every process runs the device computations (the
  export and the pictures computed from the state are collective); process 0 writes the files."""
  is_chief = jax.process_index() == 0
  eval_dir = os.path.join(workdir, "eval")
  written = []
  if is_chief:
    logs.write_json(os.path.join(eval_dir, "summary.json"), summary)
    logs.write_json(os.path.join(eval_dir, "knn_history.json"), knn_history)
    baselines = {k: summary[k] for k in ("knn_top1_random_init", "knn_top1_pixels") if k in summary}
    written = plots.write_all(workdir, log.read_records(), knn_history, baselines, view_grid)
    if evaluator is not None and evaluator.trained_features is not None:
      written += plots.write_feature_plots(workdir, evaluator, *evaluator.trained_features)
  # A method may export another copy of the backbone than the one it trains (DINO's teacher).
  if hasattr(method, "export_backbone"):
    backbone, backbone_stats = method.export_backbone(state)
  else:
    backbone, backbone_stats = state.params["backbone"], state.extra["batch_stats"]["backbone"]
  exported = checkpoint.export_backbone(
      os.path.join(workdir, "export", "backbone"),
      jax.device_get(backbone),
      jax.device_get(backbone_stats),
      config.to_json_best_effort(indent=2),
  )
  if hasattr(method, "sample_grid") and evaluator is not None:  # a pretext task's own output
    images = evaluator.test["image"][plots.evenly_spaced(len(evaluator.test["image"]), 8)]
    columns = jax.jit(method.sample_grid)(state.params, state.extra, images)
    columns = jax.device_get(columns)  # a dict comes back sorted by key: restore the method's order
    if is_chief:
      written.append(plots.plot_columns(os.path.join(workdir, "plots", "samples.png"), {k: columns[k] for k in method.sample_columns}))
  if config.model.get("backbone", "") in models.vit.VARIANTS and evaluator is not None and is_chief:
    written.append(_attention_plot(workdir, exported, evaluator.test))
  if is_chief:
    print(json.dumps(summary, indent=2))
    print(f"Wrote {eval_dir}/summary.json, plots {', '.join(os.path.basename(p) for p in written)}, backbone {exported}")
