"""VideoMoCo: frame dropping, the two players' opposite directions, temporal decay against ages,
one step on 1 vs 8 devices, the host views, the paper preset traced."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import videomoco as videomoco_config
from jaxssl import losses, methods, optim, parallel, train
from jaxssl.data import builtin_av
from jaxssl.errors import UserError
from jaxssl.methods import dictionaries, videomoco
from jaxssl.transforms import augment
from tests import helpers

IDENTITY = augment.AugmentSpec(brightness=0, contrast=0, saturation=0, hue=0, jitter_prob=0, grayscale_prob=0, blur_prob=0, solarize_prob=0)
T = 0.99999

# --- frame dropping ------------------------------------------------------------------------------


def test_drops_exactly_the_least_important_frames():
  rng = np.random.default_rng(0)
  clips = rng.normal(size=(3, 8, 4, 4, 3)).astype(np.float32)
  importance = jax.nn.softmax(jnp.asarray(rng.normal(size=(3, 8)), jnp.float32))
  out, dropped = videomoco.drop_frames(jnp.asarray(clips), importance, videomoco.num_dropped_frames(8, 0.25))
  out, dropped = np.asarray(out), np.asarray(dropped)
  assert dropped.sum(axis=1).tolist() == [2, 2, 2]  # 25% of 8 frames in every clip
  for b in range(3):
    lowest = set(np.argsort(np.asarray(importance[b]))[:2])
    for t in range(8):
      if t in lowest:
        assert dropped[b, t] == 1
        np.testing.assert_allclose(out[b, t], np.full((4, 4, 3), clips[b, t].mean()), rtol=1e-5, atol=1e-6)
      else:
        assert dropped[b, t] == 0
        np.testing.assert_array_equal(out[b, t], clips[b, t])
  assert videomoco.num_dropped_frames(32, 0.25) == 8  # the paper's 8 of 32


def test_straight_through_gradient_reaches_the_scores():
  """d(output)/d(importance_t) = frame_t - mean(frame_t), for kept and dropped frames alike."""
  rng = np.random.default_rng(1)
  clips = jnp.asarray(rng.normal(size=(2, 4, 3, 3, 3)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=clips.shape), jnp.float32)
  importance = jnp.asarray(rng.uniform(size=(2, 4)), jnp.float32)
  grad = jax.grad(lambda s: jnp.sum(weights * videomoco.drop_frames(clips, s, 1)[0]))(importance)
  expected = np.sum(np.asarray(weights) * (np.asarray(clips) - np.asarray(clips).mean(axis=(2, 3, 4), keepdims=True)), axis=(2, 3, 4))
  np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fraction", [0.0, 0.01, 1.0])
def test_a_fraction_that_drops_nothing_or_everything_names_the_fix(fraction):
  with pytest.raises(UserError, match="config.videomoco.drop_fraction"):
    videomoco.num_dropped_frames(8, fraction)


# --- temporal decay ------------------------------------------------------------------------------


def test_ages_count_enqueues_and_restart_when_the_queue_wraps():
  queue = dictionaries.init_queue(jax.random.key(0), 12, 4, track_age=True)
  assert np.asarray(queue["age"]).tolist() == [0] * 12
  expected_ages = [
      [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
      [2, 2, 2, 2, 1, 1, 1, 1, 2, 2, 2, 2],
      [3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1],
      [1, 1, 1, 1, 3, 3, 3, 3, 2, 2, 2, 2],  # wrapped: the first slots are written again
      [2, 2, 2, 2, 1, 1, 1, 1, 3, 3, 3, 3],
  ]
  for step, ages in enumerate(expected_ages):
    queue = dictionaries.enqueue(queue, jnp.full((4, 4), float(step)))
    assert np.asarray(queue["age"]).tolist() == ages, step
    np.testing.assert_allclose(dictionaries.temporal_decay_weights(queue["age"], T), T ** np.asarray(ages, np.float64), rtol=1e-7)
  assert np.asarray(queue["keys"])[:, 0].tolist() == [3.0] * 4 + [4.0] * 4 + [2.0] * 4


def test_decayed_info_nce_matches_hand_computation():
  rng = np.random.default_rng(2)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  q, k, queue = unit(rng.normal(size=(3, 5))), unit(rng.normal(size=(3, 5))), unit(rng.normal(size=(6, 5)))
  ages = np.array([1, 2, 3, 50, 500, 5000])
  tau = 0.07
  logits = np.concatenate([np.sum(q * k, -1, keepdims=True), (q @ queue.T) * T ** ages], axis=1) / tau
  expected = -np.mean(logits[:, 0] - np.log(np.exp(logits).sum(axis=1)))
  weights = dictionaries.temporal_decay_weights(jnp.asarray(ages), T)
  got = losses.info_nce(jnp.asarray(q, jnp.float32), jnp.asarray(k, jnp.float32), jnp.asarray(queue, jnp.float32), tau, negative_weights=weights)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  undecayed = losses.info_nce(jnp.asarray(q), jnp.asarray(k), jnp.asarray(queue), tau)
  assert abs(float(got) - float(undecayed)) > 1e-4  # the weights change the loss


# --- the method ----------------------------------------------------------------------------------


def tiny_config(**overrides):
  c = videomoco_config.get_config()
  c.batch_size = 8
  c.total_steps = 4
  c.optimizer.warmup_steps = 0
  c.videomoco.clip = videomoco_config._clip("motion", 5, 1, 8, flip_prob=0.5)  # 4 frame differences, 1 dropped
  c.videomoco.video_width_multiplier = 0.25
  c.videomoco.bn_groups = 2
  c.videomoco.adversarial_start_step = 1  # step 0 plain MoCo, step 1 on adversarial
  c.videomoco.generator_width = 4
  c.videomoco.generator_hidden = 8
  c.model.projector_hidden_dim = 16
  c.model.projection_dim = 8
  for key, value in overrides.items():
    c.videomoco[key] = value
  c.lock()
  return c


@pytest.fixture(scope="module")
def setup():
  config = tiny_config()
  method = methods.make_method(config, num_classes=builtin_av.NUM_CLASSES)
  labels = np.arange(config.batch_size) % builtin_av.NUM_CLASSES
  rendered = builtin_av.render(labels, np.random.default_rng(0))
  records = [{"video": v, "label": np.int32(l)} for v, l in zip(rendered["video"], labels)]
  transform = train.make_host_transform(method, builtin_av.MovingShapesSource.__new__(builtin_av.MovingShapesSource))
  views = [transform.random_map(r, np.random.default_rng(i)) for i, r in enumerate(records)]
  batch = {k: np.stack([r[k] for r in views]) for k in views[0]}
  tx = optim.with_players(optim.make_optimizer(config), method.players)
  state = jax.jit(lambda rng: train.create_train_state(method, tx, rng))(jax.random.key(0))
  return config, method, tx, state, batch, records


def test_query_and_key_are_the_same_frames_through_different_crops(setup):
  config, method, _, _, batch, records = setup
  assert batch["narrow"].shape == batch["broad0"].shape == (8, 5, 8, 8, 3)
  assert set(batch) == {"narrow", "broad0", "label"}
  # With the whole frame as the crop and no flip, the two views are identical: the same frames.
  whole = videomoco_config._clip("motion", 5, 1, 8, crop_scale=(1.0, 1.0), flip_prob=0.0)
  cfg = tiny_config(clip=whole)
  transform = train.make_host_transform(methods.make_method(cfg), builtin_av.MovingShapesSource.__new__(builtin_av.MovingShapesSource))
  for i, record in enumerate(records[:3]):
    views = transform.random_map(record, np.random.default_rng(i))
    np.testing.assert_array_equal(views["narrow"], views["broad0"])
  assert not np.array_equal(batch["narrow"], batch["broad0"])  # random crops differ


def _grads(method, params, extra, batch, step):
  return train.players_value_and_grad(method.loss, method.players, params, extra, batch, jax.random.key(3), step)


def test_generator_gradient_is_the_negated_contrastive_gradient(setup):
  """The encoder descends L_NCE (plus the probe's loss), the generator descends -L_NCE: on the
  same loss their gradients point in opposite directions, and nothing else reaches the generator."""
  _, method, _, state, batch, _ = setup
  (_, aux), grads = jax.jit(_grads, static_argnums=0)(method, state.params, state.extra, batch, 1)
  contrastive = lambda params: method.loss(params, state.extra, batch, jax.random.key(3), 1)[1]["metrics"]["moco_loss"]
  direct = jax.jit(jax.grad(contrastive))(state.params)
  helpers.assert_trees_close(grads["generator"], jax.tree.map(jnp.negative, direct["generator"]), 1e-5)
  helpers.assert_trees_close(grads["backbone"], direct["backbone"], 1e-5)  # the probe reads features, not the backbone's gradient
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["generator"])) > 0
  assert float(aux["metrics"]["dropped_fraction"]) == 0.25


def test_one_step_moves_the_players_in_opposite_directions(setup):
  """One update moves the encoder down the contrastive loss's gradient and the generator up it.

  The generator's effect on the loss goes through a hard top-k, so a small step rarely changes
  which frames are dropped; its direction is measured against the straight-through gradient.
  """
  config, method, tx, state, batch, _ = setup
  state = state.replace(step=jnp.ones((), jnp.int32))  # past adversarial_start_step
  step = jax.jit(train.make_train_step(method, tx, optim.learning_rate_schedule(config)))
  new_state, _ = step(state, batch, jax.random.key(5))
  step_rng = jax.random.fold_in(jax.random.key(5), 1)  # the train step's key for step 1
  contrastive = lambda params: method.loss(params, state.extra, batch, step_rng, 1)[1]["metrics"]["moco_loss"]
  gradient = jax.jit(jax.grad(contrastive))(state.params)
  along_gradient = lambda name: sum(
      float(jnp.vdot(new - old, g)) for new, old, g in zip(*(jax.tree.leaves(t[name]) for t in (new_state.params, state.params, gradient)))
  )
  assert along_gradient("generator") > 0  # ascends L_NCE
  assert along_gradient("backbone") < 0 and along_gradient("head") < 0  # descend it
  encoder_moved = dict(new_state.params, generator=state.params["generator"])
  assert float(jax.jit(contrastive)(encoder_moved)) < float(jax.jit(contrastive)(state.params))


def test_plain_moco_before_the_adversarial_phase(setup):
  """Before adversarial_start_step no frame is dropped and the generator gets no gradient."""
  _, method, _, state, batch, _ = setup
  (_, aux), grads = jax.jit(_grads, static_argnums=0)(method, state.params, state.extra, batch, 0)
  assert float(aux["metrics"]["dropped_fraction"]) == 0.0
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["generator"]))
  clips = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 4, 8, 8, 3)), jnp.float32)
  unchanged, _ = method.masked_queries(state.params, clips, jnp.asarray(False))
  np.testing.assert_array_equal(unchanged, clips)


def test_a_step_enqueues_keys_with_fresh_ages(setup):
  config, method, tx, state, batch, _ = setup
  step = jax.jit(train.make_train_step(method, tx, optim.learning_rate_schedule(config)))
  new_state, metrics = step(state, batch, jax.random.key(5))
  ages = np.asarray(new_state.extra["queue"]["age"])
  assert ages[:8].tolist() == [1] * 8 and ages[8:].tolist() == [1] * 8  # first enqueue: all age 1
  assert int(new_state.extra["queue"]["pointer"]) == 8
  assert float(metrics["min_decay_weight"]) == 1.0  # the step saw the initial ages (0)



def _sharded_grads(method, state, batch, mesh):
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  fn = jax.jit(lambda params, extra, batch: _grads(method, params, extra, batch, 1), in_shardings=(replicated, replicated, sharded))
  (loss, aux), grads = fn(state.params, state.extra, batch)
  return jax.device_get((loss, grads))


def _one_step(method, tx, config, state, batch, mesh):
  step = train.jit_train_step(train.make_train_step(method, tx, optim.learning_rate_schedule(config)), mesh)
  state = jax.device_put(jax.tree.map(np.asarray, state), parallel.replicated(mesh))
  batch = jax.device_put(batch, parallel.batch_sharded(mesh))
  return jax.device_get(step(state, batch, jax.random.key(7)))


def test_one_step_same_on_1_and_8_devices_float64(setup):
  """Loss, both players' gradients and the new state agree once the generator plays (colour
  augmentation, which always computes in float32, is the identity)."""
  config, method, tx, state, batch, _ = setup
  assert jax.device_count() == 8
  saved = method.clip_augment
  method.clip_augment = IDENTITY
  jax.config.update("jax_enable_x64", True)
  try:
    state64 = jax.tree.map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, state)
    state64 = state64.replace(step=jnp.ones((), jnp.int32))  # the adversarial phase
    one, eight = parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh()
    loss1, grads1 = _sharded_grads(method, state64, batch, one)
    loss8, grads8 = _sharded_grads(method, state64, batch, eight)
    helpers.assert_trees_close(loss1, loss8, 1e-5)
    helpers.assert_trees_close(grads1, grads8, 1e-5)
    (state1, metrics1), (state8, metrics8) = (_one_step(method, tx, config, state64, batch, mesh) for mesh in (one, eight))
    helpers.assert_trees_close(state1.params, state8.params, 1e-5)
    helpers.assert_trees_close(state1.extra, state8.extra, 1e-5)
    assert float(metrics1["dropped_fraction"]) == 0.25
    for name in ("backbone", "head", "generator"):  # both players learn
      moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), state1.params[name], jax.device_get(state64.params[name]))
      assert max(jax.tree.leaves(moved)) > 0, name
  finally:
    jax.config.update("jax_enable_x64", False)
    method.clip_augment = saved


def test_config_mistakes_name_the_fix():
  with pytest.raises(UserError, match="config.videomoco.temporal_decay"):
    methods.make_method(tiny_config(temporal_decay=1.5))
  with pytest.raises(UserError, match="queue_size"):
    methods.make_method(tiny_config(queue_size=12))
  with pytest.raises(UserError, match="clip.modality"):
    methods.make_method(tiny_config(clip=videomoco_config._clip("audio", 4, 1, 8)))


def test_paper_preset_traces_one_step():
  """The paper preset builds (R(2+1)D-18, 32 frames at 112 px, 8 dropped), and one train step
  traces with its shapes (nothing is computed)."""
  config = videomoco_config.get_config("paper")
  method = methods.make_method(config, num_classes=400)
  assert method.num_dropped == 8 and config.videomoco.adversarial_start_step == config.total_steps // 2
  tx = optim.with_players(optim.make_optimizer(config), method.players)
  state = jax.eval_shape(lambda rng: train.create_train_state(method, tx, rng), jax.random.key(0))
  assert state.extra["queue"]["keys"].shape == (65536, 128) and state.extra["queue"]["age"].shape == (65536,)
  clip = method.clip_view
  frames = jax.ShapeDtypeStruct((config.batch_size, clip.num_frames, clip.size, clip.size, 3), jnp.uint8)
  batch = {"narrow": frames, "broad0": frames, "label": jax.ShapeDtypeStruct((config.batch_size,), jnp.int32)}
  step = train.make_train_step(method, tx, optim.learning_rate_schedule(config))
  new_state, metrics = jax.eval_shape(step, state, batch, jax.random.key(0))
  assert jax.tree.map(lambda x: x.shape, new_state.params) == jax.tree.map(lambda x: x.shape, state.params)
  assert metrics["loss"].shape == ()
