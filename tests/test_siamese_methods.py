"""Barlow Twins, SimSiam and VICReg: one train step on 1 and on 8 simulated devices agrees.

Their losses couple every example of the batch (cross-correlation, covariance and variance over
the batch, BatchNorm in the heads), so a loss written per device would differ from the global one.
"""

import importlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxssl import methods, optim, parallel, train
from jaxssl.data import pipeline, sources
from jaxssl.transforms import augment
from tests import helpers  # also puts the repository root on sys.path for `configs`



def tiny_config(name: str) -> ml_collections.ConfigDict:
  """`configs/<name>.py` on the built-in digits at 16 px with a width-4 ResNet-18 and 16-d heads."""
  config = importlib.import_module(f"configs.{name}").get_config()
  heads = {"model.projector_hidden_dim": 16, "model.projection_dim": 8}
  if "predictor_hidden_dim" in config.model:
    heads["model.predictor_hidden_dim"] = 4
  return helpers.tiny_config(config, **heads)

def _setup(name):
  config = tiny_config(name.removesuffix("_direct"))
  if name == "simsiam_direct":  # DirectPred's predictor comes from the global batch's correlation
    config.unlock()
    config.simsiam.predictor = "direct"
  source = sources.make_source(config.data, "train")
  data = pipeline.make_train_iterator(
      source, seed=0, per_process_batch_size=config.batch_size,
      view_specs=pipeline.host_view_specs(config.augment.views),
      process_index=0, process_count=1,
  )
  batch = next(data)
  data.close()
  method = methods.make_method(config, num_classes=10)
  # On-device augmentation always works in float32 (its own 1-vs-8-device equality is tested in
  # tests/data/test_augment.py); the identity keeps this check exact in float64.
  identity = augment.AugmentSpec(brightness=0, contrast=0, saturation=0, hue=0, jitter_prob=0, grayscale_prob=0, blur_prob=0, solarize_prob=0)
  method.view_specs = (identity, identity)
  tx = optim.make_optimizer(config)
  return config, method, tx, {k: batch[k] for k in ("view0", "view1", "label")}


def _step_with_gradients(method, tx, config, state, batch, mesh):
  """Gradients, new state and metrics of one train step, in one compiled function."""
  train_step = train.make_train_step(method, tx, optim.learning_rate_schedule(config))

  def step(state, batch, rng):
    step_rng = jax.random.fold_in(rng, state.step)  # the key train_step gives the loss
    grads = jax.grad(lambda p: method.loss(p, state.extra, batch, step_rng, state.step)[0])(state.params)
    return (grads, *train_step(state, batch, rng))

  replicated = parallel.replicated(mesh)
  fn = jax.jit(step, in_shardings=(replicated, parallel.batch_sharded(mesh), replicated))
  state = jax.device_put(state, replicated)
  return jax.device_get(fn(state, jax.device_put(batch, parallel.batch_sharded(mesh)), jax.random.key(7)))


# SimSiam's loss is per example (only BatchNorm sees the batch), so the methods whose loss or
# state reduces over the global batch are the ones checked (SimSiam with DirectPred's predictor,
# set from the global batch's correlation matrix); each check costs two compilations.
@pytest.mark.parametrize("name", ("barlow_twins", "vicreg", "simsiam_direct"))
def test_one_step_same_on_1_and_8_devices_float64(name):
  """Loss, gradients, new params and batch statistics agree to 1e-6 of their scale in float64."""
  assert jax.device_count() == 8
  config, method, tx, batch = _setup(name)
  jax.config.update("jax_enable_x64", True)
  try:
    state = train.create_train_state(method, tx, jax.random.key(0))
    state = jax.tree.map(lambda x: np.asarray(x, np.float64) if x.dtype == jnp.float32 else np.asarray(x), state)
    one = _step_with_gradients(method, tx, config, state, batch, parallel.make_mesh(jax.devices()[:1]))
    eight = _step_with_gradients(method, tx, config, state, batch, parallel.make_mesh())
  finally:
    jax.config.update("jax_enable_x64", False)

  def close(what, a, b):
    def check(path, x, y):
      x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
      scale = max(1.0, float(np.abs(x).max()))
      assert np.abs(x - y).max() <= 1e-6 * scale, (what, path, np.abs(x - y).max(), scale)
    jax.tree_util.tree_map_with_path(check, a, b)

  (grads1, state1, metrics1), (grads8, state8, metrics8) = one, eight
  close("metrics", metrics1, metrics8)
  close("gradients", grads1, grads8)
  close("new params", state1.params, state8.params)
  close("new batch statistics", state1.extra, state8.extra)
  # The step really moved the parameters, and every part of the network got a gradient.
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), state1.params, state.params)
  assert max(jax.tree.leaves(moved)) > 0
  for part in ("backbone", "projector"):
    assert max(float(np.abs(g).max()) for g in jax.tree.leaves(grads1[part])) > 0, part
  assert np.isfinite(metrics1["loss"])
