"""What the benchmark's performance figures rest on: the bytes a data-parallel step moves through
collectives on 8 simulated devices, the HLO reading behind that figure, and the persistent
compilation cache every entry point uses."""

import importlib
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import pytest

from jaxssl import methods, optim, parallel, train
from tests import helpers  # also puts the repository root on sys.path for `configs`


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Width 16 in the first stage: at width 4 the BatchNorm statistics (2 x C per layer) are a tenth of
# the 9 x C^2 conv weights, which would blur the one-versus-two all-reduces the bound tells apart.
_NETWORK = {"model.width_multiplier": 0.25, "model.projector_hidden_dim": 16, "model.projection_dim": 8}


def test_collective_bytes_reads_results_of_every_collective_kind():
  hlo = textwrap.dedent("""\
      %all-reduce.1 = f32[3,3,4,8]{3,2,1,0} all-reduce(%fusion.1), channel_id=1, replica_groups={{0,1}}
      %all-reduce.2 = (f32[16]{0}, bf16[4,2]{1,0}) all-reduce(%a, %b), channel_id=2, to_apply=%add
      %all-gather.3 = f32[64,8]{1,0} all-gather(%c), channel_id=3, dimensions={0}
      %ags = (f32[8,8]{1,0}, f32[64,8]{1,0}) all-gather-start(%d), channel_id=4, dimensions={0}
      %agd = f32[64,8]{1,0} all-gather-done(%ags)
      %cp = s32[5]{0} collective-permute(%e), source_target_pairs={{0,1}}
      %add.5 = f32[16]{0} add(%x, %y)
  """)
  assert parallel.collective_bytes(hlo) == {
      "all-reduce": 4 * 3 * 3 * 4 * 8 + 4 * 16 + 2 * 4 * 2,
      "all-gather": 4 * 64 * 8 * 2,  # the sync one and the async pair, counted once at its start
      "collective-permute": 4 * 5,
  }


@pytest.fixture
def optimizing_compiler():
  """XLA's full optimisation pipeline, which the rest of the suite skips for speed: it is what
  combines the all-reduces of a weight's partial gradients into one."""
  jax.config.update("jax_disable_most_optimizations", False)
  yield
  jax.config.update("jax_disable_most_optimizations", os.environ.get("JAXSSL_TEST_OPTIMIZE") != "1")


def _collectives_over_gradients(config) -> float:
  """Bytes the compiled 8-device step moves through collectives, over one copy of the gradients."""
  mesh = parallel.make_mesh()
  assert mesh.size == 8
  method = methods.make_method(config, num_classes=10)
  tx = optim.make_optimizer(config)
  abstract_state = jax.eval_shape(lambda r: train.create_train_state(method, tx, r), jax.random.key(0))
  step = train.jit_train_step(train.make_train_step(method, tx, optim.learning_rate_schedule(config)), mesh)
  size, batch_size = config.data.image_size, config.batch_size
  batch = {f"view{i}": jax.ShapeDtypeStruct((batch_size, size, size, 3), jnp.uint8) for i in range(2)}
  batch["label"] = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
  local = config.augment.get("local_views")
  if local and local.get("num"):
    batch["local_views"] = jax.ShapeDtypeStruct((batch_size, local.num, local.size, local.size, 3), jnp.uint8)
  compiled = step.lower(abstract_state, batch, jax.random.key(1)).compile()
  gradient_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract_state.params))
  return sum(parallel.collective_bytes(compiled.as_text()).values()) / gradient_bytes


@pytest.mark.parametrize("name", ["simclr", "byol", "moco_v3", "barlow_twins"])
def test_data_parallel_step_reduces_the_gradients_about_once(optimizing_compiler, name):
  """Each weight's gradient is all-reduced once: SimCLR runs its backbone once over both views,
  and the methods with per-view BatchNorm statistics (BYOL, MoCo v3, Barlow Twins) run one pass
  over the interleaved views (`models.normalization`). One pass per view would all-reduce each
  pass's partial gradient on its own on XLA's CPU backend, about 2 x the gradients' bytes.
  """
  config = helpers.tiny_config(importlib.import_module(f"configs.{name}").get_config(), **_NETWORK)
  ratio = _collectives_over_gradients(config)
  # At least once (the replicas must agree) and at most 10% more (BatchNorm statistics, the
  # gathered embeddings); a second all-reduce of any weight's gradient breaks the bound.
  assert 1.0 <= ratio <= 1.1, f"collectives move {ratio:.2f} x the gradients' bytes"


def test_second_process_compiles_from_the_persistent_cache(tmp_path):
  """Two processes jit the same function through the entry points' cache set-up; the second one
  loads it from the cache instead of compiling (JAX records a cache hit)."""
  script = textwrap.dedent(f"""
      import jax, jax.numpy as jnp
      from jaxssl import compilation_cache
      compilation_cache.use_persistent_compilation_cache({str(tmp_path)!r})
      hits = []
      jax.monitoring.register_event_listener(lambda event, **_: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None)
      jax.jit(lambda x: jnp.tanh(x) @ x.T + 1.0)(jnp.ones((8, 8))).block_until_ready()
      print(len(hits))
  """)
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": _ROOT}
  run = lambda: subprocess.run([sys.executable, "-c", script], env=env, cwd=_ROOT, capture_output=True, text=True, check=True)
  assert run().stdout.split()[-1] == "0"  # an empty cache: compiled, and written
  assert any(tmp_path.iterdir())
  assert int(run().stdout.split()[-1]) >= 1


def test_model_flops_utilisation_uses_the_device_kinds_peak():
  from jaxssl import environment  # noqa: PLC0415

  assert environment.peak_flops_per_device("TPU v5 lite") == 197e12
  assert environment.peak_flops_per_device("TPU v5") == 459e12  # v5p, not v5 lite
  assert environment.peak_flops_per_device("NVIDIA H100 PCIe") == 756e12
  assert environment.peak_flops_per_device("NVIDIA H100 80GB HBM3") == 989e12
  assert environment.peak_flops_per_device("NVIDIA A100-SXM4-40GB") == 312e12
  assert environment.peak_flops_per_device("cpu") is None and environment.peak_flops_per_device("TPU v4 lite") is None
  # 98.5 TFLOP in a 1 s step on a 197 TFLOP/s device: half its peak.
  assert environment.model_flops_utilisation(98.5e12, 1.0, "TPU v5 lite") == pytest.approx(0.5)
  assert environment.model_flops_utilisation(1e12, 1.0, "cpu") is None
