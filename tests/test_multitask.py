"""Multi-task SSL: the weighted sum of the task losses and the lasso, harmonised input, which pass
moves the BatchNorm statistics, one step on 1 vs 8 devices with the lasso mixing on."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import multitask as multitask_config
from jaxssl import methods, optim, parallel, train
from jaxssl.errors import UserError
from jaxssl.transforms import augment
from tests import helpers

IDENTITY = augment.AugmentSpec(brightness=0, contrast=0, saturation=0, hue=0, jitter_prob=0, grayscale_prob=0, blur_prob=0, solarize_prob=0)


def tiny_config(preset="lasso", **overrides):
  config = multitask_config.get_config(preset)
  # 24 px: three 8 px cells with 5 px patches; the tiny trunk's small stem keeps a 3 x 3 map.
  return helpers.tiny_config(config, **{
      "data.image_size": 24, "augment.views": [multitask_config.relative_position_config._view(24), multitask_config.exemplar_config._view(24)],
      "relative_position.patch_size": 5, "multitask.hidden_dim": 16, "model.projection_dim": 8, "multitask.colour_cells": 6, "multitask.motion_cells": 6,
      "multitask.lasso": 0.01, **overrides,
  })


@pytest.fixture(scope="module")
def setup():
  config = tiny_config()
  method = methods.make_method(config, num_classes=10, num_train_examples=32)
  rng = np.random.default_rng(0)
  batch = {
      "view0": rng.integers(0, 256, (16, 24, 24, 3), dtype=np.uint8),
      "view1": rng.integers(0, 256, (16, 24, 24, 3), dtype=np.uint8),
      "label": np.arange(16, dtype=np.int32) % 10,
      "index": np.arange(16, dtype=np.int32) * 2,
      "frame_pair": rng.integers(0, 256, (16, 2, 24, 24, 3), dtype=np.uint8),
  }
  tx = optim.make_optimizer(config)
  state = jax.jit(lambda rng: train.create_train_state(method, tx, rng))(jax.random.key(0))
  return config, method, tx, state, batch


def test_total_is_the_weighted_task_losses_plus_the_lasso(setup):
  config, method, _, state, batch = setup
  params = dict(state.params, mixing={task: jnp.asarray([0.3, -0.7]) for task in method.tasks})
  (total, aux), grads = jax.jit(jax.value_and_grad(lambda p: method.loss(p, state.extra, batch, jax.random.key(1), 0), has_aux=True))(params)
  m = aux["metrics"]
  weights = config.multitask.weights
  assert len(method.tasks) == 4  # each task's mixing weights have an L1 norm of 1.0
  expected = sum(weights[t] * m[f"{t}_loss"] for t in method.tasks) + 0.01 * 4 * 1.0 + m["probe_loss"]
  np.testing.assert_allclose(total, expected, rtol=1e-5)
  np.testing.assert_allclose(m["mixing_l1"], 4.0, rtol=1e-6)
  for task in method.tasks:
    assert float(m[f"{task}_loss"]) > 0
  # The lasso's gradient reaches every mixing weight.
  assert all(float(jnp.abs(g).max()) > 0 for g in grads["mixing"].values())


def test_harmonised_features_ignore_colour():
  config = tiny_config("harmonize", **{"multitask.lasso": 0.0})
  method = methods.make_method(config, num_train_examples=32)
  assert "mixing" not in jax.eval_shape(method.init, jax.random.key(0))[0]
  params, extra = method.init(jax.random.key(0))
  images = jnp.asarray(np.random.default_rng(0).normal(size=(4, 24, 24, 3)), jnp.float32)
  grey = jnp.broadcast_to(images.mean(-1, keepdims=True), images.shape)
  embed = jax.jit(lambda x: method.embed(params, extra, x))
  np.testing.assert_allclose(embed(images), embed(grey), rtol=1e-5, atol=1e-6)



def test_one_step_same_on_1_and_8_devices_float64(setup):
  config, method, tx, state, batch = setup
  assert jax.device_count() == 8
  saved = method.view_specs
  method.view_specs = (IDENTITY, IDENTITY)  # colour augmentation always computes in float32
  jax.config.update("jax_enable_x64", True)
  try:
    state64 = jax.tree.map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, state)
    results = []
    for mesh in (parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh()):
      step = train.jit_train_step(train.make_train_step(method, tx, optim.learning_rate_schedule(config)), mesh)
      placed = jax.device_put(jax.tree.map(np.asarray, state64), parallel.replicated(mesh))
      results.append(jax.device_get(step(placed, jax.device_put(batch, parallel.batch_sharded(mesh)), jax.random.key(7))))
    (state1, metrics1), (state8, metrics8) = results
    for key in ("loss", "relative_position_loss", "colorization_loss", "exemplar_loss"):
      helpers.assert_trees_close(metrics1[key], metrics8[key], 1e-5)
    helpers.assert_trees_close(state1.params, state8.params, 1e-5)
    helpers.assert_trees_close(state1.extra, state8.extra, 1e-5)
  finally:
    jax.config.update("jax_enable_x64", False)
    method.view_specs = saved


def test_only_the_statistics_task_moves_the_running_batch_norm_averages(setup):
  *_, batch = setup

  def new_trunk_stats(tasks, statistics_task):
    config = tiny_config("", **{"multitask.lasso": 0.0, "multitask.tasks": tasks, "multitask.statistics_task": statistics_task})
    method = methods.make_method(config, num_train_examples=32)
    params, extra = method.init(jax.random.key(0))
    _, aux = jax.jit(lambda p: method.loss(p, extra, batch, jax.random.key(1), 0))(params)
    return aux["batch_stats"]["backbone"]

  alone = new_trunk_stats(["relative_position"], "relative_position")
  # The exemplar pass joins the loss but leaves the patches' statistics as they were ...
  kept = new_trunk_stats(["relative_position", "exemplar"], "relative_position")
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), alone, kept)
  # ... while threading the averages through both passes blends in the exemplar images.
  threaded = new_trunk_stats(["relative_position", "exemplar"], "")
  differences = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), alone, threaded))
  assert max(differences) > 1e-3


def test_config_mistakes_name_the_fix():
  with pytest.raises(UserError, match="config.multitask.statistics_task"):
    methods.make_method(tiny_config(**{"multitask.tasks": ["relative_position"]}), num_train_examples=32)
  with pytest.raises(UserError, match="config.multitask.tasks"):
    methods.make_method(tiny_config(**{"multitask.tasks": ["jigsaw"]}), num_train_examples=32)
  with pytest.raises(UserError, match="config.multitask.weights"):
    methods.make_method(tiny_config(**{"multitask.weights": {"exemplar": 1.0}}), num_train_examples=32)
  with pytest.raises(ValueError, match="Unknown preset"):
    multitask_config.get_config("quick,lassoo")


def test_motion_targets_are_the_moving_fraction_of_each_cell():
  from jaxssl.methods import multitask  # noqa: PLC0415

  still = np.zeros((1, 8, 8, 3), np.float32)
  later = still.copy()
  later[0, 1:3, 1:3, 0] = 0.5  # 4 pixels change red by 0.5: all in cell (0, 0) of a 2 x 2 grid
  later[0, 5, 4:8, 2] = 0.1  # 4 pixels change blue by 0.1, under the threshold: not moving
  later[0, 6, 6, 1] = -0.3  # one pixel of cell (1, 1) darkens by 0.3
  targets = np.asarray(multitask.motion_targets(jnp.asarray(still), jnp.asarray(later), 2, 0.15))
  np.testing.assert_allclose(targets, [[[4 / 16, 0.0], [0.0, 1 / 16]]])
  with pytest.raises(UserError, match="motion_cells=3 does not divide the 8 px frames"):
    multitask.motion_targets(jnp.asarray(still), jnp.asarray(later), 3, 0.15)


def test_frame_pairs_come_from_video_index_mod_v_gap_frames_apart():
  from jaxssl.data import views, video  # noqa: PLC0415
  from jaxssl.inputs import ImagesWithFramePairs  # noqa: PLC0415

  transform = video.frame_pairs_transform(ImagesWithFramePairs("builtin:moving_shapes", size=16, gap=3), views.MultiViewTransform([{"size": 8}]))
  videos = transform.videos
  image = np.zeros((12, 12, 3), np.uint8)
  for index in (5, len(videos) + 5):
    out = transform.random_map({"image": image, "label": 0, "index": index}, np.random.default_rng(index))
    assert out["view0"].shape == (8, 8, 3) and out["frame_pair"].shape == (2, 16, 16, 3) and out["index"] == index
    frames = videos[5]["video"]
    starts = [t for t in range(len(frames) - 3) if np.array_equal(out["frame_pair"], video.center_view(frames[[t, t + 3]], 16))]
    assert starts, "the pair is not two frames 3 apart of video 5"
