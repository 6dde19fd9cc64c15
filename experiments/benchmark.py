"""Throughput, compile time, memory and collectives of a config's train step, and its host pipeline.

  python experiments/benchmark.py --config=configs/byol.py:quick
  python experiments/benchmark.py --config=configs/byol.py:quick --fast_cpu_paths
  python experiments/benchmark.py --config=configs/byol.py:quick --batch_sizes=32,64,128,256 \
      --devices=1,2,4,8 --plot=benchmark.png

Prints, for the config's batch size:
  - train step: ms/step and images/s after compilation, and where the time goes (device
    augmentation, backbone forward + backward, everything else: heads, loss, optimizer, EMA);
  - XLA's cost-analysis FLOPs per step and the memory XLA plans for one step; on a TPU or GPU,
    model FLOPs utilisation (those FLOPs per second against the device's dense bfloat16 peak);
  - compile: cold (an empty persistent cache) and warm (the same executable from the cache, as a
    second run of the config would load it), and whether the warm compile hit the cache;
  - collectives (with more than one device): the bytes the compiled step moves through
    all-reduce, all-gather, ... against one all-reduce of the gradients;
  - host pipeline: reading (decoding) the records alone, then two-view images per second on one
    core (decode, crop, flip; no device work), and with --pipeline_workers=1,2 grain worker
    processes; --pipeline_only times nothing else (e.g. on a folder of JPEGs written by
    experiments/make_sample_jpegs.py, at the `:imagenet` presets' 224 px).
With --batch_sizes and --devices (simulated CPU devices, one process each), a table and a plot of
images/s against batch size and device count, and planned memory against batch size.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/byol.py", "Config file.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 10, "Timed train steps after compilation.")
_PIPELINE_BATCHES = flags.DEFINE_integer("pipeline_batches", 20, "Batches timed in the host pipeline (0: skip).")
_PIPELINE_ONLY = flags.DEFINE_boolean("pipeline_only", False, "Time the host pipeline only (no train step).")
_PIPELINE_WORKERS = flags.DEFINE_list("pipeline_workers", [], "Also time the host pipeline with these many grain worker processes.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", [], "Batch sizes to sweep (default: the config's).")
_DEVICES = flags.DEFINE_list("devices", [], "Simulated CPU device counts to sweep, one process each.")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 0, "Simulate this many CPU devices in this process.")
_PLOT = flags.DEFINE_string("plot", "", "Write the sweep's plot here (PNG).")
_FAST_CPU_PATHS = flags.DEFINE_boolean(
    "fast_cpu_paths", None, "Set the config's model.fast_cpu_paths (jaxssl/models/fast_paths.py); unset: the config's own."
)
_JSON = flags.DEFINE_string("json", "", "Write the measurements here (JSON), e.g. for a sweep's parent process.")


def _timed(function, *args, repeats: int) -> float:
  """Seconds per call of a compiled `function`, after one untimed call."""
  import jax  # pylint: disable=g-import-not-at-top

  jax.block_until_ready(function(*args))
  start = time.perf_counter()
  for _ in range(repeats):
    out = function(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / repeats


def _planned_bytes(compiled) -> int | None:
  """The memory XLA plans for one call: arguments + outputs + temporaries, minus donated aliases."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  return (analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
          - analysis.alias_size_in_bytes)


def _flops(compiled) -> float | None:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
  return float(cost["flops"]) if cost and "flops" in cost else None


def _host_batch(config, per_process: int, seed: int = 0, workers: int = 0):
  """One host batch from the config's training data (and the iterator, for timing it)."""
  from jaxssl.data import pipeline, sources  # pylint: disable=g-import-not-at-top
  from jaxssl.data import views as views_lib  # pylint: disable=g-import-not-at-top

  source = sources.make_source(config.data, config.data.train_split)
  data = pipeline.make_train_iterator(
      source, seed=seed, per_process_batch_size=per_process,
      view_specs=pipeline.host_view_specs(config.augment.views),
      process_index=0, process_count=1, worker_count=workers, num_threads=0, prefetch_batches=0,
      **views_lib.local_view_settings(config.get("augment")),
  )
  return next(data), data


def measure_pipeline(config, batches: int, workers: int = 0) -> float:
  """Two-view images/s of the host pipeline: in this thread alone (`workers=0`, so the figure is
  per core) or with `workers` grain worker processes (after the first batch, so their start-up
  is not counted)."""
  from jaxssl import parallel  # pylint: disable=g-import-not-at-top

  per_process = parallel.check_batch_size(config.batch_size)
  _, data = _host_batch(config, per_process, workers=workers)
  start = time.perf_counter()
  for _ in range(batches):
    next(data)
  rate = batches * per_process / (time.perf_counter() - start)
  data.close()
  return rate


def measure_decode(config, count: int) -> float:
  """Records/s of reading (for image files: decoding) the training data alone, one core: the
  ceiling of any pipeline that decodes every image in full."""
  from jaxssl.data import sources  # pylint: disable=g-import-not-at-top

  source = sources.make_source(config.data, config.data.train_split)
  count = min(count, len(source))
  start = time.perf_counter()
  for index in range(count):
    source[index]
  return count / (time.perf_counter() - start)


def _print_pipeline(config, batches: int, workers: list[int]) -> None:
  sizes = "/".join(str(v.size) for v in config.augment.views)
  print(f"host pipeline on {config.data.name}, {sizes} px views, batch {config.batch_size}:")
  print(f"  reading the records alone: {measure_decode(config, batches * config.batch_size):.0f} records/s on one core")
  print(f"  two views per record: {measure_pipeline(config, batches):.0f} two-view images/s on one core")
  for count in workers:
    rate = measure_pipeline(config, batches, workers=count)
    print(f"  with {count} grain worker process(es): {rate:.0f} two-view images/s ({rate / count:.0f} per worker)")


def _step_parts(method, state, batch, rng, repeats: int) -> dict[str, float]:
  """Seconds of the step's two big parts, each jitted alone: the device augmentation of the
  global views, and the backbone's forward + backward on them (one pass over the interleaved
  views, each with its own BatchNorm statistics, as BYOL, MoCo v3 and the Siamese methods run
  it). Methods without both parts (e.g. video or pretext tasks) get none."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from jaxssl.methods.common import view_images  # pylint: disable=g-import-not-at-top
  from jaxssl.models import normalization  # pylint: disable=g-import-not-at-top

  specs, backbone = getattr(method, "view_specs", None), getattr(method, "backbone", None)
  if not specs or backbone is None or "backbone" not in state.params or "view0" not in batch:
    return {}
  views = tuple(batch[f"view{i}"] for i in range(len(specs)))
  augment = jax.jit(lambda key, views: view_images(key, views, specs))
  images = augment(rng, views)
  stats = state.extra["batch_stats"]["backbone"]

  def backbone_loss(params, images):
    return jnp.sum(backbone(params, stats, normalization.interleave(images), train=True, views=len(images))[0])

  forward_backward = jax.jit(jax.grad(backbone_loss))
  parts = {
      "device augmentation": _timed(augment, rng, views, repeats=repeats),
      "backbone forward + backward": _timed(forward_backward, state.params["backbone"], images, repeats=repeats),
  }
  target = state.extra.get("target_params", {}).get("backbone")
  if target is not None:  # an EMA target's backbone runs forward only
    parts["target backbone forward"] = _timed(jax.jit(backbone_loss), target, images, repeats=repeats)
  return parts


def measure_step(config, *, steps: int, parts: bool = True, compile_twice: bool = True) -> dict:
  """One config's train step on every device of this process: speed, compile, FLOPs, memory, collectives."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from jaxssl import methods, optim, parallel, train  # pylint: disable=g-import-not-at-top

  mesh = parallel.make_mesh()
  per_process = parallel.check_batch_size(config.batch_size)
  host_batch, data = _host_batch(config, per_process)
  data.close()
  method = methods.make_method(config, 10)
  tx = optim.make_optimizer(config)
  abstract_state = jax.eval_shape(lambda r: train.create_train_state(method, tx, r), jax.random.key(0))
  shardings = train.state_shardings(method, mesh, abstract_state, fsdp=config.get("fsdp", False))
  step = train.jit_train_step(train.make_train_step(method, tx, optim.learning_rate_schedule(config)), mesh, shardings)
  state = jax.jit(lambda r: train.create_train_state(method, tx, r), out_shardings=shardings)(jax.random.key(0))
  keys = [k for k in ("view0", "view1", "view2", "local_views", "clip", "audio", "label") if k in host_batch]
  global_batch = parallel.to_global({k: host_batch[k] for k in keys}, parallel.batch_sharded(mesh))
  rng = jax.random.key(1)

  hits = []
  jax.monitoring.register_event_listener(lambda event, **_: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None)
  def lower_and_compile():
    """(executable, seconds tracing and lowering to HLO, seconds in XLA or the cache)."""
    start = time.perf_counter()
    lowered = step.lower(state, global_batch, rng)
    middle = time.perf_counter()
    executable = lowered.compile()
    return executable, middle - start, time.perf_counter() - middle

  compiled, trace_s, compile_s = lower_and_compile()
  result = {"compile_cold_s": trace_s + compile_s, "trace_cold_s": trace_s}
  if compile_twice:
    jax.clear_caches()  # forget the in-memory executable and traces, as a new process would
    before = len(hits)
    compiled, trace_s, compile_s = lower_and_compile()
    result.update(compile_warm_s=trace_s + compile_s, trace_warm_s=trace_s, warm_compile_hit_cache=len(hits) > before)

  repeats = max(steps, 1)
  state, metrics = compiled(state, global_batch, rng)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(repeats):
    state, metrics = compiled(state, global_batch, rng)
  jax.block_until_ready(metrics)
  step_seconds = (time.perf_counter() - start) / repeats

  gradient_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract_state.params))
  collectives = parallel.collective_bytes(compiled.as_text())
  result.update(
      devices=jax.device_count(),
      platform=jax.devices()[0].platform,
      device_kind=jax.devices()[0].device_kind,
      batch_size=config.batch_size,
      step_s=step_seconds,
      images_per_s=config.batch_size / step_seconds,
      flops_per_step=_flops(compiled),
      planned_bytes_per_device=_planned_bytes(compiled),
      gradient_bytes=gradient_bytes,
      collective_bytes=collectives,
      collectives_over_gradients=sum(collectives.values()) / gradient_bytes,
      loss_is_finite=bool(np.isfinite(float(metrics["loss"]))),
  )
  if parts:
    result["parts_s"] = _step_parts(method, state, global_batch, rng, repeats)
  return result


def _describe(config) -> str:
  import jax  # pylint: disable=g-import-not-at-top

  m = config.model
  return (f"{config.method}: {m.backbone} x{m.get('width_multiplier', 1.0)} {m.get('stem', '')} stem, "
          f"{config.data.image_size} px, batch {config.batch_size}, {jax.device_count()} {jax.devices()[0].platform} device(s)"
          f"{', fast CPU paths' if m.get('fast_cpu_paths', False) else ''}")


def _print_step(result: dict) -> None:
  step = result["step_s"]
  print(f"train step: {step * 1000:.0f} ms/step, {result['images_per_s']:.0f} images/s")
  parts = result.get("parts_s") or {}
  if parts:
    rest = step - sum(parts.values())
    for name, seconds in [*parts.items(), ("everything else (heads, loss, optimizer, EMA update)", rest)]:
      print(f"  {name}: {seconds * 1000:.0f} ms ({100 * seconds / step:.0f}%)")
  if result["flops_per_step"]:
    # The cost analysis is of the per-device (SPMD) program: every device runs it.
    gflops = result["flops_per_step"] / 1e9 * result["devices"]
    print(f"XLA cost analysis: {gflops:.2f} GFLOP/step over all devices, {gflops / step:.1f} GFLOP/s achieved")
    from jaxssl import environment  # pylint: disable=g-import-not-at-top

    mfu = environment.model_flops_utilisation(result["flops_per_step"], step, result["device_kind"])
    print(f"model FLOPs utilisation: {100 * mfu:.1f}% of the {result['device_kind']}'s dense bfloat16 peak" if mfu is not None else
          f"model FLOPs utilisation: no peak known for device kind '{result['device_kind']}' (jaxssl.environment lists TPUs and GPUs)")
  if result["planned_bytes_per_device"] is not None:
    print(f"memory XLA plans per device for one step: {result['planned_bytes_per_device'] / 2**20:.0f} MiB")
  warm = (f"; warm {result['compile_warm_s']:.1f} s of which tracing {result['trace_warm_s']:.1f} s "
          f"(persistent cache {'hit' if result['warm_compile_hit_cache'] else 'MISSED'})" if "compile_warm_s" in result else "")
  print(f"compile: cold {result['compile_cold_s']:.1f} s of which tracing and lowering {result['trace_cold_s']:.1f} s{warm}")
  if result["devices"] > 1:
    moved = ", ".join(f"{kind} {b / 2**20:.2f} MiB" for kind, b in sorted(result["collective_bytes"].items()))
    print(f"collectives per step: {moved or 'none'}; {result['collectives_over_gradients']:.2f} x one all-reduce "
          f"of the gradients ({result['gradient_bytes'] / 2**20:.2f} MiB)")


def _sweep_devices(argv_config: list[str], counts: list[int], batch_sizes: list[str]) -> list[dict]:
  """Runs this script once per simulated device count (the count is fixed when JAX starts)."""
  rows = []
  for count in counts:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
      command = [sys.executable, __file__, *argv_config, f"--cpu_devices={count}", "--pipeline_batches=0",
                 f"--steps={_STEPS.value}", f"--json={out.name}"]
      if batch_sizes:
        command.append(f"--batch_sizes={','.join(batch_sizes)}")
      print(f"\n== {count} simulated device(s) ==", flush=True)
      subprocess.run(command, check=True)
      rows.extend(json.load(open(out.name)))
  return rows


def _table(rows: list[dict]) -> None:
  print("\n| devices | batch | ms/step | images/s | planned MiB/device | collectives / gradients |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    memory = f"{r['planned_bytes_per_device'] / 2**20:.0f}" if r["planned_bytes_per_device"] is not None else "-"
    ratio = f"{r['collectives_over_gradients']:.2f}" if r["devices"] > 1 else "-"
    print(f"| {r['devices']} | {r['batch_size']} | {r['step_s'] * 1000:.0f} | {r['images_per_s']:.0f} | {memory} | {ratio} |")


def _plot(rows: list[dict], path: str, title: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  fig, (speed, memory) = plt.subplots(1, 2, figsize=(10, 4))
  for devices in sorted({r["devices"] for r in rows}):
    mine = sorted((r for r in rows if r["devices"] == devices), key=lambda r: r["batch_size"])
    batches = [r["batch_size"] for r in mine]
    speed.plot(batches, [r["images_per_s"] for r in mine], "o-", label=f"{devices} device(s)")
    if all(r["planned_bytes_per_device"] is not None for r in mine):
      memory.plot(batches, [r["planned_bytes_per_device"] / 2**20 for r in mine], "o-", label=f"{devices} device(s)")
  speed.set(xlabel="global batch size", ylabel="images / s", title="train-step throughput")
  memory.set(xlabel="global batch size", ylabel="MiB per device", title="memory XLA plans per step")
  batch_sizes = sorted({r["batch_size"] for r in rows})
  for axis in (speed, memory):
    axis.set_xscale("log", base=2)
    axis.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
    axis.minorticks_off()
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    axis.legend()
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  print(f"plot: {path}")


def main(argv) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  if _FAST_CPU_PATHS.value is not None:
    with config.unlocked():
      config.model.fast_cpu_paths = _FAST_CPU_PATHS.value
  workers = [int(w) for w in _PIPELINE_WORKERS.value if int(w) > 0]
  if _PIPELINE_ONLY.value:
    _print_pipeline(config, _PIPELINE_BATCHES.value or 20, workers)
    return
  config_args = [a for a in sys.argv[1:] if a.startswith(("--config", "--fast_cpu_paths", "--nofast_cpu_paths"))]
  if _DEVICES.value and not _CPU_DEVICES.value:
    rows = _sweep_devices(config_args, [int(d) for d in _DEVICES.value], _BATCH_SIZES.value)
    _table(rows)
    if _PLOT.value:
      _plot(rows, _PLOT.value, f"{config.method}, {config.model.backbone} x{config.model.get('width_multiplier', 1.0)}")
    return

  import jax  # pylint: disable=g-import-not-at-top

  if _CPU_DEVICES.value:
    jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
  from jaxssl import compilation_cache  # pylint: disable=g-import-not-at-top

  # An empty cache, so the first compile is cold and the second is exactly a warm re-run's.
  with tempfile.TemporaryDirectory() as cache:
    compilation_cache.use_persistent_compilation_cache(cache)
    rows = []
    for batch_size in [int(b) for b in _BATCH_SIZES.value] or [config.batch_size]:
      config.batch_size = batch_size
      print(_describe(config), flush=True)
      result = measure_step(config, steps=_STEPS.value, compile_twice=len(rows) == 0)
      _print_step(result)
      rows.append(result)
  if len(rows) > 1:
    _table(rows)
    if _PLOT.value:
      _plot(rows, _PLOT.value, _describe(config))
  print(f"peak host memory (RSS) of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
  if _PIPELINE_BATCHES.value:
    _print_pipeline(config, _PIPELINE_BATCHES.value, workers)
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(rows, f)


if __name__ == "__main__":
  app.run(main)
