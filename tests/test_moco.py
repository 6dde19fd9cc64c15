"""MoCo: per-sub-batch (shuffle) BN, the key encoder's momentum update, the queue in the train
state, config errors, and one train step on 1 vs 8 simulated devices (queue included)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxssl import methods, optim, parallel, train
from jaxssl.data import pipeline, sources
from jaxssl.transforms import augment
from jaxssl.errors import UserError
from jaxssl.methods import dictionaries
from tests import helpers  # also puts the repository root on sys.path for `configs`

from configs import moco as moco_config

IDENTITY = augment.AugmentSpec(brightness=0, contrast=0, saturation=0, hue=0, jitter_prob=0, grayscale_prob=0, blur_prob=0, solarize_prob=0)


def tiny_config(preset: str = "v2", **overrides) -> ml_collections.ConfigDict:
  """MoCo on the built-in digits at 16 px: width-4 ResNet-18, 8-d head, batch 16 in 4 BN groups."""
  defaults = {
      "model.projector_hidden_dim": 16,
      "model.projection_dim": 8,
      "moco.queue_size": 48,
      "moco.bn_groups": 4,
      "moco.bank_negatives": 32,
      "moco.symmetric": False,  # the paper's one direction; the symmetric step has its own test
  }
  return helpers.tiny_config(moco_config.get_config(preset), **{**defaults, **overrides})

def _batch(config):
  source = sources.make_source(config.data, "train")
  data = pipeline.make_train_iterator(
      source, seed=0, per_process_batch_size=config.batch_size,
      view_specs=pipeline.host_view_specs(config.augment.views),
      process_index=0, process_count=1,
  )
  batch = next(data)
  data.close()
  return batch


@pytest.fixture(scope="module")
def setup():
  config = tiny_config()
  method = methods.make_method(config, num_classes=10)
  tx = optim.make_optimizer(config)
  state = train.create_train_state(method, tx, jax.random.key(0))
  return config, method, tx, state, _batch(config)


def test_queue_size_not_a_multiple_of_the_batch_is_a_user_error():
  with pytest.raises(UserError, match="config.moco.queue_size=40 is not a multiple of the global batch size"):
    methods.make_method(tiny_config(**{"moco.queue_size": 40}))


def test_bn_groups_must_divide_the_batch():
  with pytest.raises(UserError, match="config.moco.bn_groups=5"):
    methods.make_method(tiny_config(**{"moco.bn_groups": 5}))


def test_unknown_preset_token():
  with pytest.raises(ValueError, match="Unknown preset token"):
    moco_config.get_config("v3")


def test_presets_follow_the_papers():
  v1, v2 = moco_config.get_config("v1"), moco_config.get_config("v2")
  assert (v1.moco.temperature, v1.model.mlp_head, v1.augment.views[0].blur_prob) == (0.07, False, 0.0)
  assert (v2.moco.temperature, v2.model.mlp_head, v2.augment.views[0].blur_prob) == (0.2, True, 0.5)
  imagenet = moco_config.get_config("imagenet")
  assert (imagenet.moco.queue_size, imagenet.moco.momentum, imagenet.batch_size) == (65536, 0.999, 256)
  assert not imagenet.model.head_batch_norm  # the official v2 head: fc-ReLU-fc
  assert not imagenet.moco.symmetric and moco_config.get_config("quick").moco.symmetric  # CIFAR demo's option on CPU
  quick = moco_config.get_config("quick")
  quick.batch_size = 64
  assert quick.moco.queue_size == 128  # two batches, following an overridden batch size
  assert moco_config.get_config("v1,quick,end_to_end").moco.dictionary == "end_to_end"


def test_key_encoder_and_queue_at_init(setup):
  config, _, _, state, _ = setup
  for part in ("backbone", "head"):
    jax.tree.map(np.testing.assert_array_equal, state.extra["key_params"][part], state.params[part])
  keys = np.asarray(state.extra["queue"]["keys"])
  assert keys.shape == (config.moco.queue_size, config.model.projection_dim)
  np.testing.assert_allclose(np.linalg.norm(keys, axis=-1), 1.0, rtol=1e-5)
  assert int(state.extra["queue"]["pointer"]) == 0


def test_after_update_moves_keys_by_momentum_and_enqueues(setup):
  config, method, _, state, _ = setup
  moved = state.replace(params=jax.tree.map(lambda x: x + 1.0, state.params))
  new_keys = jnp.ones((config.batch_size, config.model.projection_dim)) / np.sqrt(config.model.projection_dim)
  aux = {"batch_stats": state.extra["batch_stats"], "key_batch_stats": state.extra["key_batch_stats"], "keys": new_keys}
  extra = method.after_update(moved, aux)
  m = config.moco.momentum
  # key = m * key + (1 - m) * (key + 1) = key + (1 - m)
  jax.tree.map(
      lambda new, old: np.testing.assert_allclose(new, old + (1 - m), rtol=1e-5, atol=1e-6),
      extra["key_params"], state.extra["key_params"],
  )
  np.testing.assert_array_equal(extra["queue"]["keys"][: config.batch_size], new_keys)
  np.testing.assert_array_equal(extra["queue"]["keys"][config.batch_size :], state.extra["queue"]["keys"][config.batch_size :])
  assert int(extra["queue"]["pointer"]) == config.batch_size


# ----------------------------------------------------------------------------------------------
# Shuffle-BN: a key's BN statistics come from its shuffled sub-batch, not its query's.
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoders():
  """Jitted query and key projections of tiny MoCo encoders with and without shuffle-BN."""
  out = {}
  for shuffle_bn in (True, False):
    method = methods.make_method(tiny_config(**{"moco.shuffle_bn": shuffle_bn}))
    params, extra = method.init(jax.random.key(0))
    stats = extra["batch_stats"]
    out[shuffle_bn] = (
        jax.jit(lambda images, m=method, p=params, s=stats: m.encode_queries(p, s, images)[0][1]),
        jax.jit(lambda images, rng, m=method, p=params, s=stats: m.encode_keys(p, s, images, rng)[0][1]),
    )
  return out


def _groups_of_example(example, rng, batch_size=16, group_size=4):
  permutation = np.asarray(dictionaries.shuffle_permutation(rng, batch_size))
  key_position = int(np.argwhere(permutation == example)[0, 0])
  key_group = set(permutation[key_position // group_size * group_size :][:group_size].tolist())
  query_group = set(range(example // group_size * group_size, example // group_size * group_size + group_size))
  return query_group, key_group


def test_shuffle_bn_separates_key_statistics_from_the_query_sub_batch(encoders):
  queries, keys = encoders[True]
  images = jax.random.uniform(jax.random.key(1), (16, 16, 16, 3))
  rng = jax.random.key(2)
  example = 0
  query_group, key_group = _groups_of_example(example, rng)
  only_query, only_key = sorted(query_group - key_group), sorted(key_group - query_group)
  assert only_query and only_key, "pick another rng: the shuffled group equals the query's"
  q0, k0 = queries(images)[example], keys(images, rng)[example]

  def changed(other):
    perturbed = images.at[other].add(0.5)
    return (
        float(jnp.abs(queries(perturbed)[example] - q0).max()),
        float(jnp.abs(keys(perturbed, rng)[example] - k0).max()),
    )

  # An example in the query's sub-batch only: the query moves, the key does not (bit for bit).
  dq, dk = changed(only_query[0])
  assert dq > 1e-4 and dk == 0.0
  # An example in the key's shuffled sub-batch only: the key moves, the query does not.
  dq, dk = changed(only_key[0])
  assert dq == 0.0 and dk > 1e-4


def test_without_shuffle_bn_statistics_are_global(encoders):
  queries, keys = encoders[False]
  images = jax.random.uniform(jax.random.key(1), (16, 16, 16, 3))
  rng = jax.random.key(2)
  perturbed = images.at[15].add(0.5)  # far from example 0 in any grouping
  assert float(jnp.abs(queries(perturbed)[0] - queries(images)[0]).max()) > 1e-4
  assert float(jnp.abs(keys(perturbed, rng)[0] - keys(images, rng)[0]).max()) > 1e-4


# ----------------------------------------------------------------------------------------------
# One step on 1 vs 8 devices.
# ----------------------------------------------------------------------------------------------


def _step_with_grads(method, tx, config, state, batch, mesh):
  """(loss, gradients, new state) of one jitted train step on `mesh`, state sharded as in a run."""
  train_step = train.make_train_step(method, tx, optim.learning_rate_schedule(config))

  def step_and_grads(state, batch, rng):
    grads = jax.grad(lambda p: method.loss(p, state.extra, batch, jax.random.fold_in(rng, state.step), state.step)[0])(state.params)
    new_state, metrics = train_step(state, batch, rng)
    return new_state, metrics["loss"], grads

  shardings = train.state_shardings(method, mesh, jax.eval_shape(lambda: state))
  fn = jax.jit(
      step_and_grads,
      in_shardings=(shardings, parallel.batch_sharded(mesh), parallel.replicated(mesh)),
      out_shardings=(shardings, parallel.replicated(mesh), parallel.replicated(mesh)),
  )
  state = jax.device_put(jax.tree.map(np.asarray, state), shardings)
  new_state, loss, grads = fn(state, jax.device_put(batch, parallel.batch_sharded(mesh)), jax.random.key(7))
  return jax.device_get((loss, grads, new_state))


def compare_one_step_float64(method, tx, config, state, batch, tolerance=1e-5):
  """Loss, gradients and the whole new state (params, optimizer, extra) agree on 1 and 8 devices.

  float64 takes float32 rounding out of the way; on-device augmentation (float32 always, tested
  in tests/data/test_augment.py) is switched to the identity.
  """
  assert jax.device_count() == 8
  saved = method.view_specs
  method.view_specs = (IDENTITY,) * len(saved)
  jax.config.update("jax_enable_x64", True)
  try:
    state64 = jax.tree.map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, state)
    one = _step_with_grads(method, tx, config, state64, batch, parallel.make_mesh(jax.devices()[:1]))
    eight = _step_with_grads(method, tx, config, state64, batch, parallel.make_mesh())
  finally:
    jax.config.update("jax_enable_x64", False)
    method.view_specs = saved

  def close(path, a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    # NaN marks state not yet set (NPID's NCE constant under the softmax loss): equal if both are.
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=jax.tree_util.keystr(path))
    a, b = np.nan_to_num(a), np.nan_to_num(b)
    scale = max(1.0, float(np.abs(a).max()))
    assert np.abs(a - b).max() <= tolerance * scale, (jax.tree_util.keystr(path), np.abs(a - b).max())

  jax.tree_util.tree_map_with_path(close, one, eight)
  (_, grads, new_state) = one
  assert max(float(np.abs(g).max()) for g in jax.tree.leaves(grads)) > 0
  return one


def test_one_step_same_on_1_and_8_devices_float64(setup):
  config, method, tx, state, batch = setup
  batch = {k: batch[k] for k in ("view0", "view1", "label")}
  loss, _, new_state = compare_one_step_float64(method, tx, config, state, batch)
  assert np.isfinite(loss)
  # The queue took this batch's keys at the front, and the key encoder moved.
  assert int(new_state.extra["queue"]["pointer"]) == config.batch_size
  assert not np.array_equal(new_state.extra["queue"]["keys"][:16], np.asarray(state.extra["queue"]["keys"][:16], np.float64))
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), new_state.extra["key_params"], jax.device_get(state.extra["key_params"]))
  assert max(jax.tree.leaves(moved)) > 0


# The memory bank is sharded device state like the queue; end-to-end has no extra state.
@pytest.mark.parametrize("dictionary", ["memory_bank"])
def test_dictionary_baselines_same_on_1_and_8_devices_float64(dictionary):
  config = tiny_config(**{"moco.dictionary": dictionary, "moco.bank_size": 1440})  # 1440 % 8 == 0: sharded
  method = methods.make_method(config)
  tx = optim.make_optimizer(config)
  state = train.create_train_state(method, tx, jax.random.key(0))
  batch = {k: v for k, v in _batch(config).items() if k in ("view0", "view1", "index")}
  _, _, new_state = compare_one_step_float64(method, tx, config, state, batch)
  assert "queue" not in new_state.extra and "key_params" not in new_state.extra
  if dictionary == "memory_bank":
    changed = np.any(new_state.extra["memory_bank"] != np.asarray(state.extra["memory_bank"], np.float64), axis=-1)
    np.testing.assert_array_equal(np.flatnonzero(changed), np.sort(batch["index"]))


def test_head_batch_norm_keeps_head_statistics_per_sub_batch():
  """With model.head_batch_norm the v2 head is fc-BN-ReLU-fc, its statistics in the key encoder too."""
  config = tiny_config(**{"model.head_batch_norm": True, "moco.bn_groups": 2})
  method = methods.make_method(config, num_classes=10)
  params, extra = method.init(jax.random.key(0))
  assert jax.tree.leaves(extra["batch_stats"]["head"]) and jax.tree.leaves(extra["key_batch_stats"]["head"])
  images = jax.random.uniform(jax.random.key(1), (config.batch_size, 16, 16, 3))
  (_, projection), stats = method.encode_queries(params, extra["batch_stats"], images)
  # Each sub-batch is normalised on its own: encoding one half alone gives the same projections.
  (_, half), _ = method._encoder(params, extra["batch_stats"])(images[: config.batch_size // 2])
  np.testing.assert_allclose(projection[: config.batch_size // 2], half, rtol=1e-4, atol=1e-5)
  assert not jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.allclose(a, b)), stats["head"], extra["batch_stats"]["head"]))


def test_symmetric_step_queries_both_views_and_enqueues_both_keys():
  """`moco.symmetric` (the official CIFAR-10 demo's option): both directions' losses, summed;
  2B keys enter the queue per step, so the queue must hold a multiple of 2B; 1 and 8 devices agree."""
  with pytest.raises(UserError, match="multiple"):
    methods.make_method(tiny_config(**{"moco.symmetric": True, "moco.queue_size": 48}))
  config = tiny_config(**{"moco.symmetric": True, "moco.queue_size": 64})
  method = methods.make_method(config, num_classes=10)
  tx = optim.make_optimizer(config)
  state = train.create_train_state(method, tx, jax.random.key(0))
  batch = {k: v for k, v in _batch(config).items() if k in ("view0", "view1", "label")}
  loss, _, new_state = compare_one_step_float64(method, tx, config, state, batch)
  assert int(new_state.extra["queue"]["pointer"]) == 2 * config.batch_size
  # Each direction's InfoNCE is at least log(1 + K) - 2 / tau away from 0: the sum is larger than one.
  asymmetric = methods.make_method(tiny_config(**{"moco.queue_size": 64}), num_classes=10)

  @jax.jit  # one compile for both losses: op by op, the two forward passes take far longer
  def moco_losses(params, extra, batch):
    loss = lambda m: m.loss(params, extra, batch, jax.random.key(3), 0)[1]["metrics"]["moco_loss"]
    return loss(asymmetric), loss(method)

  one_direction, both = moco_losses(state.params, state.extra, batch)
  assert float(both) > 1.5 * float(one_direction)
