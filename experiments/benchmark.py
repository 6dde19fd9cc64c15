"""Throughput of a config's train step and host input pipeline.

  python experiments/benchmark.py --config=configs/byol.py [--config.batch_size=128] [--steps=10]

Prints: train-step images/s (after compilation), compile seconds, peak host memory, and the
host pipeline's images/s per core (decode, crop, flip; no device work).
"""

from __future__ import annotations

import os
import resource
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/byol.py", "Config file.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 10, "Timed train steps after compilation.")
_PIPELINE_BATCHES = flags.DEFINE_integer("pipeline_batches", 20, "Batches timed in the host pipeline.")


def main(argv) -> None:
  del argv
  import jax

  from jaxssl import methods, optim, parallel, train
  from jaxssl.data import pipeline, sources
  from jaxssl.data import views as views_lib

  config = _CONFIG.value
  mesh = parallel.make_mesh()
  source = sources.make_source(config.data, config.data.train_split)
  view_specs = pipeline.host_view_specs(config.augment.views)
  per_process = parallel.check_batch_size(config.batch_size)

  # Host pipeline alone, single-threaded, so the number is per core.
  data = pipeline.make_train_iterator(
      source, seed=0, per_process_batch_size=per_process, view_specs=view_specs,
      process_index=0, process_count=1, num_threads=0, prefetch_batches=0,
      **views_lib.local_view_settings(config.get("augment")),
  )
  next(data)
  start = time.perf_counter()
  for _ in range(_PIPELINE_BATCHES.value):
    batch = next(data)
  pipeline_rate = _PIPELINE_BATCHES.value * per_process / (time.perf_counter() - start)

  method = methods.make_method(config, 10)
  tx = optim.make_optimizer(config)
  step = train.jit_train_step(train.make_train_step(method, tx, optim.learning_rate_schedule(config)), mesh)
  state = jax.jit(lambda r: train.create_train_state(method, tx, r), out_shardings=parallel.replicated(mesh))(jax.random.key(0))
  global_batch = parallel.to_global({k: batch[k] for k in ("view0", "view1", "local_views", "label") if k in batch}, parallel.batch_sharded(mesh))
  rng = jax.random.key(1)
  start = time.perf_counter()
  compiled = step.lower(state, global_batch, rng).compile()
  compile_seconds = time.perf_counter() - start
  state, metrics = compiled(state, global_batch, rng)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(_STEPS.value):
    state, metrics = compiled(state, global_batch, rng)
  jax.block_until_ready(metrics)
  step_seconds = (time.perf_counter() - start) / _STEPS.value
  peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f"config: {config.method} {config.model.backbone} x{config.model.width_multiplier} {config.model.stem} stem, "
        f"{config.data.image_size}px, batch {config.batch_size}, {jax.device_count()} {jax.devices()[0].platform} device(s)")
  crops = f", {batch['local_views'].shape[1]} local crops" if "local_views" in batch else ""
  print(f"train step: {step_seconds * 1000:.0f} ms/step, {config.batch_size / step_seconds:.0f} images/s{crops}")
  print(f"compile: {compile_seconds:.1f} s")
  print(f"peak host memory (RSS): {peak_mb:.0f} MB")
  print(f"host pipeline: {pipeline_rate:.0f} images/s per core")
  data.close()


if __name__ == "__main__":
  app.run(main)
