"""DINO: the loss, centring, temperature and momentum schedules, collapse statistics, the frozen
last layer, and one step on 1 and on 8 simulated devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import losses, methods, optim, train
from jaxssl.data import pipeline, sources, views
from jaxssl.transforms import augment
from jaxssl.methods import dino
from tests import helpers  # also puts the repository root on sys.path for `configs`
from tests.test_byol import _compare_one_step

from configs import dino as dino_config  # noqa: E402


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_dino_loss_by_hand():
  rng = np.random.default_rng(0)
  num_crops, batch, dim = 5, 3, 7
  student = rng.normal(size=(num_crops, batch, dim)).astype(np.float32)
  teacher = rng.normal(size=(2, batch, dim)).astype(np.float32)
  center = rng.normal(size=(dim,)).astype(np.float32)
  student_t, teacher_t = 0.1, 0.04
  total, terms = 0.0, 0
  for i in range(2):
    q = _softmax((teacher[i] - center) / teacher_t)
    for v in range(num_crops):
      if v == i:
        continue
      log_p = np.log(_softmax(student[v] / student_t))
      total += np.mean(np.sum(-q * log_p, axis=-1))
      terms += 1
  got = float(losses.dino_loss(jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(center), student_t, teacher_t))
  np.testing.assert_allclose(got, total / terms, rtol=1e-5)


def test_sinkhorn_teacher_balances_output_dimensions():
  """DINOv2's Sinkhorn teacher gives every output dimension 1/K of the global crops' mass, even
  when one dimension dominates every teacher output; the centre plays no part."""
  rng = np.random.default_rng(2)
  num_global, batch, dim = 2, 16, 8
  teacher = rng.normal(size=(num_global, batch, dim)) * 0.1
  teacher[..., 0] += 0.5  # dimension 0 wins every softmax at temperature 0.04 without a centre
  teacher = jnp.asarray(teacher, jnp.float32)
  center = jnp.asarray(rng.normal(size=(dim,)), jnp.float32)
  probs = losses.dino_teacher_probs(teacher, center, 0.04, "sinkhorn", 3)
  assert probs.shape == (num_global, batch, dim)
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
  # Three rounds end on the row normalisation, so the columns are balanced only approximately.
  np.testing.assert_allclose(probs.reshape(-1, dim).mean(0), 1.0 / dim, atol=0.025)
  np.testing.assert_allclose(probs.reshape(-1, dim), losses.sinkhorn_knopp(teacher.reshape(-1, dim), 0.04, 3), rtol=1e-6)
  uncentred = losses.dino_teacher_probs(teacher, jnp.zeros(dim), 0.04, "centre")
  assert float(uncentred[..., 0].mean()) > 0.9
  with pytest.raises(ValueError, match="'centre' \\(DINO\\) or 'sinkhorn'"):
    losses.dino_teacher_probs(teacher, center, 0.04, "center")


def test_presets_follow_the_paper():
  """The CPU presets' departures (Sinkhorn teacher, BN head, fast teacher) stay out of the paper's."""
  cpu = dino_config.get_config()
  assert (cpu.dino.teacher_centering, cpu.dino.use_bn_in_head, cpu.dino.base_teacher_momentum) == ("sinkhorn", True, 0.5)
  for preset in ("imagenet", "imagenet_vit"):
    c = dino_config.get_config(preset)
    assert c.dino.teacher_centering == "centre" and not c.dino.use_bn_in_head
    assert (c.dino.warmup_teacher_temperature, c.dino.teacher_temperature, c.dino.student_temperature) == (0.04, 0.07, 0.1)
    assert (c.dino.out_dim, c.dino.hidden_dim, c.dino.bottleneck_dim) == (65536, 2048, 256)
    assert (c.dino.base_teacher_momentum, c.dino.center_momentum, c.optimizer.grad_clip_norm) == (0.996, 0.9, 3.0)


def test_no_gradient_reaches_the_teacher():
  student, teacher = jnp.ones((3, 2, 4)), jnp.arange(8.0).reshape(1, 2, 4)
  grad = jax.grad(lambda t: losses.dino_loss(student, t, jnp.zeros(4)))(teacher)
  np.testing.assert_array_equal(grad, 0.0)


def test_center_update():
  center = jnp.asarray([1.0, -1.0, 0.5])
  teacher = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 3)), jnp.float32)
  expected = 0.9 * np.asarray(center) + 0.1 * np.asarray(teacher).reshape(8, 3).mean(0)
  np.testing.assert_allclose(dino.updated_center(center, teacher, 0.9), expected, rtol=1e-6)


def test_collapse_statistics():
  k = 8
  uniform = jnp.full((4, k), 1.0 / k)
  stats = dino.collapse_statistics(uniform, jnp.log(uniform))
  np.testing.assert_allclose(stats["teacher_entropy"], np.log(k), rtol=1e-6)
  np.testing.assert_allclose(stats["teacher_kl_to_mean"], 0.0, atol=1e-6)
  np.testing.assert_allclose(stats["teacher_student_kl"], 0.0, atol=1e-6)
  one_hot = jax.nn.one_hot(jnp.arange(4), k)  # confident and diverse: 4 different classes
  stats = dino.collapse_statistics(one_hot, jnp.log(uniform))
  np.testing.assert_allclose(stats["teacher_entropy"], 0.0, atol=1e-6)
  np.testing.assert_allclose(stats["teacher_kl_to_mean"], np.log(4), rtol=1e-5)
  np.testing.assert_allclose(stats["teacher_student_kl"], np.log(k), rtol=1e-5)


@pytest.fixture(scope="module")
def setup():
  config = helpers.tiny_dino_config()
  source = sources.make_source(config.data, "train")
  data = pipeline.make_train_iterator(
      source, seed=0, per_process_batch_size=config.batch_size,
      view_specs=pipeline.host_view_specs(config.augment.views),
      **views.local_view_settings(config.augment), process_index=0, process_count=1,
  )
  batch = next(data)
  data.close()
  method = methods.make_method(config, num_classes=10)
  tx = optim.make_optimizer(config)
  state = train.create_train_state(method, tx, jax.random.key(0))
  return config, method, tx, state, batch


def test_teacher_temperature_warms_up_linearly(setup):
  config, method, _, _, _ = setup
  warmup = config.dino.teacher_temperature_warmup_steps  # 4
  got = [float(method.teacher_temperature(s)) for s in (0, warmup // 2, warmup, 10 * warmup)]
  np.testing.assert_allclose(got, [0.04, 0.055, 0.07, 0.07], rtol=1e-6)


def test_teacher_is_an_ema_with_cosine_momentum(setup):
  config, method, _, state, _ = setup
  jax.tree.map(np.testing.assert_array_equal, state.extra["target_params"]["backbone"], state.params["backbone"])
  moved = state.replace(step=jnp.asarray(3), params=jax.tree.map(lambda x: x + 1.0, state.params))
  aux = {k: state.extra[k] for k in ("batch_stats", "target_batch_stats", "center")}
  extra = method.after_update(moved, aux)
  momentum = 1 - (1 - config.dino.base_teacher_momentum) * (np.cos(np.pi * 2 / config.total_steps) + 1) / 2  # step 2 was taken
  jax.tree.map(
      lambda new, old: np.testing.assert_allclose(new, old + (1 - momentum), rtol=1e-5, atol=1e-6),
      extra["target_params"], state.extra["target_params"],
  )


def test_last_layer_frozen_for_its_steps():
  config = helpers.tiny_dino_config(**{"optimizer.frozen_steps.last_layer": 2})
  tx = optim.make_optimizer(config)
  params = {"backbone": {"w": jnp.ones((2, 2))}, "last_layer": {"direction": jnp.ones((2, 3))}}
  grads = jax.tree.map(jnp.ones_like, params)
  state = tx.init(params)
  for step in range(3):
    updates, state = tx.update(grads, state, params)
    assert float(jnp.abs(updates["backbone"]["w"]).max()) > 0
    assert (float(jnp.abs(updates["last_layer"]["direction"]).max()) > 0) == (step >= 2)


def test_one_step_same_on_1_and_8_devices_float64(setup):
  """Loss, gradients and new state (teacher, its BN statistics, centre) agree on 1 and 8 devices:
  the Sinkhorn teacher and the head's BN both need the global batch. On-device augmentation is
  the identity here (float32 only; it is tested on its own)."""
  config, method, tx, state, batch = setup
  saved = method.view_specs, method.local_spec
  identity = augment.AugmentSpec(brightness=0, contrast=0, saturation=0, hue=0, jitter_prob=0, grayscale_prob=0, blur_prob=0, solarize_prob=0)
  method.view_specs, method.local_spec = (identity, identity), identity
  # A non-zero centre, so its update is exercised (the Sinkhorn teacher does not subtract it).
  state = state.replace(extra={**state.extra, "center": jax.random.normal(jax.random.key(1), state.extra["center"].shape)})
  jax.config.update("jax_enable_x64", True)
  try:
    state64 = jax.tree.map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, state)
    _compare_one_step((config, method, tx, state64, batch), tolerance=1e-5)
  finally:
    jax.config.update("jax_enable_x64", False)
    method.view_specs, method.local_spec = saved
