"""BraVe: the loss against hand-computed values, one shared head, and one step on 1 vs 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import brave as brave_config
from jaxssl import losses, methods, optim, parallel, train
from jaxssl.data import builtin_av, video
from jaxssl.evaluation import evaluator
from jaxssl.transforms import augment
from tests import helpers  # noqa: F401  (puts the repository root on sys.path)


def _normalize(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_brave_loss_matches_hand_computation():
  rng = np.random.default_rng(0)
  p_n, z_n = rng.normal(size=(2, 4, 3))
  broad = [tuple(rng.normal(size=(2, 4, 3))) for _ in range(2)]
  expected = 0.0
  for p_b, z_b in broad:
    expected += np.mean(np.sum((_normalize(p_n) - _normalize(z_b)) ** 2, -1))
    expected += np.mean(np.sum((_normalize(p_b) - _normalize(z_n)) ** 2, -1))
  got = losses.brave_loss((p_n, z_n), tuple(broad))
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # A hand-checkable case: orthogonal vectors are at squared distance 2, equal ones at 0.
  e1, e2 = np.eye(2)[None, 0], np.eye(2)[None, 1]
  np.testing.assert_allclose(losses.brave_loss((e1, e1), ((e2, e1),)), 2.0 + 0.0, rtol=1e-6)


def test_brave_loss_stops_gradients_at_projections():
  rng = np.random.default_rng(1)
  p_n, z_n, p_b, z_b = (jnp.asarray(x) for x in rng.normal(size=(4, 3, 5)))
  grads = jax.grad(lambda z_n, z_b: losses.brave_loss((p_n, z_n), ((p_b, z_b),)), argnums=(0, 1))(z_n, z_b)
  for g in grads:
    np.testing.assert_array_equal(g, 0.0)
  assert np.abs(jax.grad(lambda p: losses.brave_loss((p, z_n), ((p_b, z_b),)))(p_n)).max() > 0


def tiny_config():
  c = brave_config.get_config()
  c.batch_size = 16
  c.total_steps = 4
  c.optimizer.warmup_steps = 0
  c.brave.narrow = brave_config._view("rgb", 4, 1, 16, "small3d", 0.25, flip_prob=0.5, blur_prob=0.5)
  c.brave.broad_views = [
      brave_config._view("motion", 4, 2, 8, "small3d", 0.25, flip_prob=0.5),
      brave_config._view("audio", 4, 1, 0, "resnet9", 0.0625),
  ]
  c.model.projector_hidden_dim = c.model.predictor_hidden_dim = 16
  c.model.projection_dim = 8
  c.lock()
  return c


@pytest.fixture(scope="module")
def setup():
  config = tiny_config()
  method = methods.make_method(config, num_classes=builtin_av.NUM_CLASSES)
  labels = np.arange(config.batch_size) % builtin_av.NUM_CLASSES
  rendered = builtin_av.render(labels, np.random.default_rng(0))
  transform = train.make_host_transform(method, builtin_av.MovingShapesSource.__new__(builtin_av.MovingShapesSource))
  records = [
      transform.random_map({"video": v, "audio": a.astype(np.float32) / 32767, "label": np.int32(l)}, np.random.default_rng(i))
      for i, (v, a, l) in enumerate(zip(rendered["video"], rendered["audio"], labels))
  ]
  batch = {k: np.stack([r[k] for r in records]) for k in records[0]}
  tx = optim.make_optimizer(config)
  state = jax.jit(lambda rng: train.create_train_state(method, tx, rng))(jax.random.key(0))
  return config, method, tx, state, batch


def test_views_have_the_configured_shapes(setup):
  _, _, _, _, batch = setup
  assert batch["narrow"].shape == (16, 4, 16, 16, 3)
  assert batch["broad0"].shape == (16, 4, 8, 8, 3)
  assert batch["broad1"].shape == (16, round(4 / builtin_av.FPS * builtin_av.AUDIO_SAMPLE_RATE))


def test_one_projector_and_predictor_shared_by_all_views(setup):
  config, method, _, state, batch = setup
  params = state.params
  assert set(params) == {"backbone", "broad", "projector", "predictor", "probe"}
  assert len(params["broad"]) == 2  # a backbone per broad view ...
  # ... but exactly one projector and one predictor parameter set: the sizes of single MLPs.
  d, h, p = 32, 16, 8  # features of small3d at width 0.25 (4 x 8 channels); head sizes of tiny_config
  projector_size = sum(x.size for x in jax.tree.leaves(params["projector"]))
  predictor_size = sum(x.size for x in jax.tree.leaves(params["predictor"]))
  assert projector_size == (d * h + h) + 2 * h + (h * p + p)
  assert predictor_size == (p * h + h) + 2 * h + (h * p + p)
  # Every view's loss term reaches the shared head: the gradient of the head changes when only
  # one broad view's input changes.
  loss = lambda prm, extra, b: method.loss(prm, extra, b, jax.random.key(0), 0)[0]
  grad = jax.jit(lambda prm, extra, b: jax.grad(loss)(prm, extra, b)["projector"])
  changed = dict(batch, broad1=batch["broad1"][::-1].copy())
  difference = jax.tree.map(
      lambda a, b: float(np.abs(a - b).max()), grad(state.params, state.extra, batch), grad(state.params, state.extra, changed)
  )
  assert max(jax.tree.leaves(difference)) > 0


def _loss_and_grads(method, state, batch, mesh):
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  fn = jax.jit(
      lambda params, extra, batch, rng: jax.value_and_grad(method.loss, has_aux=True)(params, extra, batch, rng, 0),
      in_shardings=(replicated, replicated, sharded, replicated),
  )
  (loss, aux), grads = fn(state.params, state.extra, batch, jax.random.key(7))
  return jax.device_get((loss, aux["batch_stats"], grads))


def _one_step(method, tx, config, state, batch, mesh):
  step = train.jit_train_step(train.make_train_step(method, tx, optim.learning_rate_schedule(config)), mesh)
  state = jax.device_put(jax.tree.map(np.asarray, state), parallel.replicated(mesh))
  batch = jax.device_put(batch, parallel.batch_sharded(mesh))
  new_state, metrics = step(state, batch, jax.random.key(7))
  return jax.device_get((new_state, metrics))


def _close(what, a, b, tolerance):
  def check(path, x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    scale = max(1.0, float(np.abs(x).max()))
    assert np.abs(x - y).max() <= tolerance * scale, (what, path, np.abs(x - y).max(), scale)
  jax.tree_util.tree_map_with_path(check, a, b)


def test_one_step_same_on_1_and_8_devices_float64(setup):
  """Loss, gradients, batch statistics and the new state agree once float32 rounding is out of the
  way (colour augmentation, which always computes in float32, is switched to the identity)."""
  config, method, tx, state, batch = setup
  assert jax.device_count() == 8
  saved = method.narrow_augment, method.broad_augments
  identity = augment.AugmentSpec(brightness=0, contrast=0, saturation=0, hue=0, jitter_prob=0, grayscale_prob=0, blur_prob=0, solarize_prob=0)
  method.narrow_augment, method.broad_augments = identity, (identity, identity)
  jax.config.update("jax_enable_x64", True)
  try:
    state64 = jax.tree.map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, state)
    batch64 = dict(batch, broad1=batch["broad1"].astype(np.float64))
    one, eight = parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh()
    loss1, stats1, grads1 = _loss_and_grads(method, state64, batch64, one)
    loss8, stats8, grads8 = _loss_and_grads(method, state64, batch64, eight)
    _close("loss", loss1, loss8, 1e-5)
    _close("gradients", grads1, grads8, 1e-5)
    _close("batch statistics", stats1, stats8, 1e-5)
    state1, metrics1 = _one_step(method, tx, config, state64, batch64, one)
    state8, metrics8 = _one_step(method, tx, config, state64, batch64, eight)
    _close("new params", state1.params, state8.params, 1e-5)
    _close("new extra", state1.extra, state8.extra, 1e-5)
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), state1.params, jax.device_get(state64.params))
    assert max(jax.tree.leaves(moved)) > 0
    assert np.isfinite(metrics1["loss"]) and abs(metrics1["loss"] - metrics8["loss"]) < 1e-5
  finally:
    jax.config.update("jax_enable_x64", False)
    method.narrow_augment, method.broad_augments = saved


def test_eval_clips_are_centred_narrow_views(setup):
  config, method, _, _, _ = setup
  source = builtin_av.MovingShapesSource.__new__(builtin_av.MovingShapesSource)
  source.labels = np.arange(3, dtype=np.int32)
  source.videos = builtin_av.render(source.labels, np.random.default_rng(0))["video"]
  source.audio = np.zeros((3, 10), np.int16)
  arrays = evaluator.eval_array_loader(config.data.image_size, method)(source, None)
  assert arrays["clip"].shape == (3, 4, 16, 16, 3)
  start = (builtin_av.NUM_FRAMES - 4) // 2
  expected = video.center_view(source.videos[0][start : start + 4], 16)
  np.testing.assert_array_equal(arrays["clip"][0], expected)


def test_config_mistakes_name_the_fix():
  from jaxssl.errors import UserError

  config = tiny_config()
  config.unlock()
  config.brave.broad_views[1].width_multiplier = 0.125  # audio features 64 != narrow 32
  with pytest.raises(UserError, match="same feature size"):
    methods.make_method(config)
  config.brave.broad_views = []
  with pytest.raises(UserError, match="at least one broad view"):
    methods.make_method(config)
  config = tiny_config()
  config.unlock()
  config.brave.narrow.modality = "audio"
  with pytest.raises(UserError, match="narrow.modality"):
    methods.make_method(config)


def test_motion_narrow_view_embeds_frame_differences(setup):
  """With narrow.modality='motion' the narrow backbone (training and evaluation) sees frame differences."""
  config, method, _, state, batch = setup
  config = config.copy_and_resolve_references()
  config.brave.narrow.modality = "motion"
  motion = methods.make_method(config, num_classes=builtin_av.NUM_CLASSES)
  clips = augment.normalize(batch["narrow"][:4])
  got = motion.embed(state.params, state.extra, clips)
  expected = method.embed(state.params, state.extra, clips[:, 1:] - clips[:, :-1])
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
  assert not np.allclose(got, method.embed(state.params, state.extra, clips), atol=1e-3)
