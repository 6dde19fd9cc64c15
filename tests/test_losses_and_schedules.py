"""Losses, schedules and optimizer masks against values computed by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import losses, optim, schedules
from tests import helpers


def test_l2_normalize_unit_norm_and_zero_safe():
  x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
  np.testing.assert_allclose(losses.l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)


def test_normalized_regression_is_two_minus_two_cosine():
  p = jnp.array([[1.0, 0.0], [1.0, 0.0], [2.0, 2.0]])
  z = jnp.array([[5.0, 0.0], [0.0, 3.0], [-1.0, -1.0]])
  # cos = 1, 0, -1  ->  2 - 2 cos = 0, 2, 4
  np.testing.assert_allclose(losses.normalized_regression(p, z), [0.0, 2.0, 4.0], atol=1e-6)


def test_byol_loss_symmetrised_hand_value():
  q1 = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  q2 = jnp.array([[1.0, 1.0], [1.0, 0.0]])
  z1 = jnp.array([[0.0, 2.0], [1.0, 0.0]])
  z2 = jnp.array([[3.0, 0.0], [1.0, 1.0]])
  # q1 vs z2: cos 1 and 1/sqrt2 -> losses 0 and 2 - sqrt2; mean = (2 - sqrt2)/2
  # q2 vs z1: cos 1/sqrt2 and 1   -> losses 2 - sqrt2 and 0; mean = (2 - sqrt2)/2
  expected = 2.0 - math.sqrt(2.0)
  np.testing.assert_allclose(losses.byol_loss((q1, q2), (z1, z2)), expected, rtol=1e-6)


def test_byol_loss_gradient_stops_at_target():
  q = (jnp.array([[1.0, 2.0]]), jnp.array([[0.5, -1.0]]))
  z = (jnp.array([[2.0, 1.0]]), jnp.array([[1.0, 1.0]]))
  grad_target = jax.grad(lambda z1: losses.byol_loss(q, (z1, z[1])))(z[0])
  grad_online = jax.grad(lambda q1: losses.byol_loss((q1, q[1]), z))(q[0])
  np.testing.assert_array_equal(grad_target, 0.0)
  assert np.abs(grad_online).sum() > 0


def test_softmax_cross_entropy_masks_unlabelled():
  logits = jnp.array([[0.0, 0.0], [10.0, 0.0], [0.0, 0.0]])
  labels = jnp.array([0, 0, -1])
  expected = (math.log(2.0) + math.log(1.0 + math.exp(-10.0))) / 2
  np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "step, expected",
    [(0, 0.0), (5, 0.5), (10, 1.0), (55, 0.5), (100, 0.0), (32.5, 0.5 * (1 + math.cos(math.pi * 0.25)))],
)
def test_warmup_cosine(step, expected):
  value = schedules.warmup_cosine(step, base_value=1.0, total_steps=100, warmup_steps=10)
  np.testing.assert_allclose(value, expected, atol=1e-6)


@pytest.mark.parametrize("step, expected", [(0, 0.996), (50, 0.998), (100, 1.0), (25, 1 - 0.004 * (math.cos(math.pi / 4) + 1) / 2)])
def test_byol_target_decay(step, expected):
  value = schedules.cosine_increase(step, base_value=0.996, total_steps=100)
  np.testing.assert_allclose(value, expected, atol=1e-7)


def test_linear_scaling_rule():
  assert schedules.scaled_learning_rate(0.2, 4096) == pytest.approx(3.2)


def test_lars_excludes_bias_and_norm_from_decay_and_trust_ratio():
  config = helpers.tiny_byol_config(**{"optimizer.name": "lars", "optimizer.weight_decay": 0.5, "optimizer.warmup_steps": 0})
  params = {"dense": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full((2,), 2.0)}, "norm": {"scale": jnp.full((2,), 2.0)}}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)
  tx = optim.make_optimizer(config)
  updates, _ = tx.update(grads, tx.init(params), params)
  lr = float(optim.learning_rate_schedule(config)(0))
  # Excluded leaves: plain momentum SGD, first step = -lr * grad.
  np.testing.assert_allclose(updates["dense"]["bias"], -lr * 0.1, rtol=1e-6)
  np.testing.assert_allclose(updates["norm"]["scale"], -lr * 0.1, rtol=1e-6)
  # Kernel: g + wd * p = 1.1; trust ratio = eta * ||p|| / ||g + wd p|| = 1e-3 * 4 / 2.2.
  trust = 1e-3 * 4.0 / 2.2
  np.testing.assert_allclose(updates["dense"]["kernel"], -lr * trust * 1.1, rtol=1e-5)


def test_lr_multiplier_scales_one_module():
  config = helpers.tiny_byol_config(**{"optimizer.name": "sgd", "optimizer.weight_decay": 0.0, "optimizer.warmup_steps": 0})
  config.unlock()
  config.optimizer.lr_multipliers = {"predictor": 10.0}
  params = {"predictor": {"bias": jnp.ones(2)}, "backbone": {"bias": jnp.ones(2)}}
  grads = jax.tree.map(jnp.ones_like, params)
  tx = optim.make_optimizer(config)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates["predictor"]["bias"], 10 * updates["backbone"]["bias"], rtol=1e-6)
  assert float(jnp.abs(updates["backbone"]["bias"]).sum()) > 0


def test_decay_mask():
  params = {"conv": {"kernel": jnp.ones((3, 3, 1, 2))}, "bn": {"scale": jnp.ones(2), "bias": jnp.ones(2)}}
  assert optim.decay_mask(params) == {"conv": {"kernel": True}, "bn": {"scale": False, "bias": False}}


def test_probe_has_its_own_learning_rate_and_no_weight_decay():
  config = helpers.tiny_byol_config(**{"optimizer.name": "lars", "optimizer.weight_decay": 0.5, "optimizer.warmup_steps": 0})
  params = {"probe": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full((2,), 2.0)}, "backbone": {"bias": jnp.ones(2)}}
  grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)
  tx = optim.make_optimizer(config)
  updates, state = tx.update(grads, tx.init(params), params)
  # First step of momentum SGD: -lr * grad, whatever the method's optimizer, rate and decay.
  for leaf in jax.tree.leaves(updates["probe"]):
    np.testing.assert_allclose(leaf, -optim.PROBE_LEARNING_RATE * 0.1, rtol=1e-6)
  # Second step with the same gradient: momentum 0.9 gives -lr * (0.1 + 0.9 * 0.1).
  updates, _ = tx.update(grads, state, params)
  np.testing.assert_allclose(updates["probe"]["bias"], -optim.PROBE_LEARNING_RATE * 0.19, rtol=1e-6)
  # The backbone follows the method's schedule, a different rate.
  assert not np.allclose(updates["backbone"]["bias"], updates["probe"]["bias"])
