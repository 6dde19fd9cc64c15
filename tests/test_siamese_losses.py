"""Barlow Twins, VICReg and SimSiam losses against values computed by hand and with NumPy loops;
the constant learning rate of SimSiam's predictor; DirectPred's predictor and its state."""

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import losses, methods, optim
from tests import helpers

# Two examples, two dimensions: small enough to work out on paper.
Z1 = np.array([[1.0, 2.0], [3.0, 4.0]])
Z2 = np.array([[1.0, 5.0], [0.0, 3.0]])


def _random_pair(batch=6, dim=4, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(batch, dim)) * [1.0, 2.0, 0.5, 3.0][:dim] + 1.0, rng.normal(size=(batch, dim))


def _numpy_barlow_twins(z1, z2, lam, eps):
  """Element by element, as eq. 1 of the paper reads."""
  batch, dim = z1.shape
  standardise = lambda z: (z - z.mean(0)) / np.sqrt(((z - z.mean(0)) ** 2).mean(0) + eps)
  a, b = standardise(z1), standardise(z2)
  loss = 0.0
  for i in range(dim):
    for j in range(dim):
      c_ij = sum(a[n, i] * b[n, j] for n in range(batch)) / batch
      loss += (1.0 - c_ij) ** 2 if i == j else lam * c_ij**2
  return loss


def _numpy_vicreg(z1, z2, weights=(25.0, 25.0, 1.0), gamma=1.0, eps=1e-4):
  batch, dim = z1.shape
  invariance = np.mean((z1 - z2) ** 2)

  def variance(z):
    return np.mean([max(0.0, gamma - math.sqrt(np.var(z[:, j], ddof=1) + eps)) for j in range(dim)])

  def covariance(z):
    centred = z - z.mean(0)
    total = 0.0
    for i in range(dim):
      for j in range(dim):
        if i != j:
          total += (np.sum(centred[:, i] * centred[:, j]) / (batch - 1)) ** 2
    return total / dim

  v = (variance(z1) + variance(z2)) / 2
  c = covariance(z1) + covariance(z2)
  return weights[0] * invariance + weights[1] * v + weights[2] * c


def test_barlow_twins_hand_value():
  # Without eps: bs(Z1) = [[-1, -1], [1, 1]], bs(Z2) = [[1, 1], [-1, -1]], so every C_ij = -1:
  # invariance (1 - (-1))^2 * 2 = 8, redundancy (-1)^2 * 2 = 2.
  invariance, redundancy = losses.barlow_twins_terms(jnp.array(Z1), jnp.array(Z2), eps=0.0)
  np.testing.assert_allclose([invariance, redundancy], [8.0, 2.0], rtol=1e-6)
  np.testing.assert_allclose(losses.barlow_twins_loss(jnp.array(Z1), jnp.array(Z2), 0.1, eps=0.0), 8.2, rtol=1e-6)


def test_barlow_twins_identity_correlation_costs_nothing():
  z = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])  # standardised, uncorrelated
  np.testing.assert_allclose(losses.barlow_twins_loss(jnp.array(z), jnp.array(z), eps=0.0), 0.0, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_barlow_twins_matches_numpy(seed):
  z1, z2 = _random_pair(seed=seed)
  expected = _numpy_barlow_twins(z1, z2, lam=5e-3, eps=1e-5)
  np.testing.assert_allclose(losses.barlow_twins_loss(jnp.array(z1), jnp.array(z2)), expected, rtol=1e-5)


def test_vicreg_hand_value():
  # invariance: mean of (0, -3, 3, 1)^2 = 19 / 4.
  # variance: Z1's columns have unbiased var 2 (std > 1, no hinge); Z2's have var 0.5 and 2,
  #   so v(Z2) = (1 - sqrt(0.5 + 1e-4)) / 2 and the term is v(Z2) / 2.
  # covariance: Cov(Z1) = [[2, 2], [2, 2]] -> (4 + 4) / 2 = 4; Cov(Z2) = [[.5, 1], [1, 2]] -> 2 / 2 = 1.
  invariance, variance, covariance = losses.vicreg_terms(jnp.array(Z1), jnp.array(Z2))
  expected_variance = (1.0 - math.sqrt(0.5001)) / 4
  np.testing.assert_allclose([invariance, variance, covariance], [4.75, expected_variance, 5.0], rtol=1e-6)
  np.testing.assert_allclose(
      losses.vicreg_loss(jnp.array(Z1), jnp.array(Z2)), 25 * 4.75 + 25 * expected_variance + 5.0, rtol=1e-6
  )


def test_vicreg_collapsed_embeddings_pay_the_full_variance_hinge():
  z = jnp.ones((4, 3))
  _, variance, covariance = losses.vicreg_terms(z, z)
  np.testing.assert_allclose(variance, 1.0 - math.sqrt(1e-4), rtol=1e-6)
  np.testing.assert_allclose(covariance, 0.0, atol=1e-7)


@pytest.mark.parametrize("seed", [0, 1])
def test_vicreg_matches_numpy(seed):
  z1, z2 = _random_pair(seed=seed)
  z1 = z1 * 0.5  # some dimensions below the hinge
  np.testing.assert_allclose(losses.vicreg_loss(jnp.array(z1), jnp.array(z2)), _numpy_vicreg(z1, z2), rtol=1e-5)
  weights = dict(invariance_weight=1.0, variance_weight=2.0, covariance_weight=3.0)
  np.testing.assert_allclose(
      losses.vicreg_loss(jnp.array(z1), jnp.array(z2), **weights), _numpy_vicreg(z1, z2, (1.0, 2.0, 3.0)), rtol=1e-5
  )


def test_simsiam_hand_value():
  p1, p2 = jnp.array([[1.0, 0.0], [3.0, 4.0]]), jnp.array([[1.0, 1.0], [0.0, 2.0]])
  z1, z2 = jnp.array([[2.0, 2.0], [0.0, -1.0]]), jnp.array([[0.0, 1.0], [4.0, 3.0]])
  # p1 vs z2: cos 0 and 24/25; p2 vs z1: cos 1 and -1.  L = -(0 + 0.96)/4 - (1 - 1)/4 = -0.24.
  np.testing.assert_allclose(losses.negative_cosine_similarity((p1, p2), (z1, z2)), -0.24, rtol=1e-6)


def test_multicrop_simsiam_loss_with_two_crops_is_the_paper_loss():
  p1, p2 = jnp.array([[1.0, 0.0], [3.0, 4.0]]), jnp.array([[1.0, 1.0], [0.0, 2.0]])
  z1, z2 = jnp.array([[2.0, 2.0], [0.0, -1.0]]), jnp.array([[0.0, 1.0], [4.0, 3.0]])
  np.testing.assert_allclose(losses.multicrop_negative_cosine_similarity((p1, p2), (z1, z2)), -0.24, rtol=1e-6)


def test_multicrop_simsiam_loss_by_hand():
  # Two global crops and one local crop, one example each: the pairs are p1 -> z0, p2 -> z0,
  # p0 -> z1 and p2 -> z1, with cosines 0, 1, 24/25 and 3/5; the local crop's z is never a target.
  z = (jnp.array([[1.0, 0.0]]), jnp.array([[3.0, 4.0]]), jnp.array([[5.0, 5.0]]))
  p = (jnp.array([[4.0, 3.0]]), jnp.array([[0.0, 2.0]]), jnp.array([[7.0, 0.0]]))
  loss = losses.multicrop_negative_cosine_similarity(p, z, num_targets=2)
  np.testing.assert_allclose(loss, -(0.0 + 1.0 + 0.96 + 0.6) / 4, rtol=1e-6)
  grad_local_z = jax.grad(lambda z2: losses.multicrop_negative_cosine_similarity(p, (z[0], z[1], z2)))(z[2])
  grad_local_p = jax.grad(lambda p2: losses.multicrop_negative_cosine_similarity((p[0], p[1], p2), z))(p[2])
  np.testing.assert_array_equal(grad_local_z, 0.0)
  assert np.abs(grad_local_p).sum() > 0


def test_simsiam_gradient_stops_at_projections():
  p = (jnp.array([[1.0, 2.0]]), jnp.array([[0.5, -1.0]]))
  z = (jnp.array([[2.0, 1.0]]), jnp.array([[1.0, 1.0]]))
  grad_z = jax.grad(lambda z1: losses.negative_cosine_similarity(p, (z1, z[1])))(z[0])
  grad_p = jax.grad(lambda p1: losses.negative_cosine_similarity((p1, p[1]), z))(p[0])
  np.testing.assert_array_equal(grad_z, 0.0)
  assert np.abs(grad_p).sum() > 0


def test_direct_predictor_by_hand():
  # Eigenvalues 4, 1, 0 along a rotated basis: p = sqrt(s / 4) + eps = 1.1, 0.6, 0.1.
  angle = 0.3
  basis = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
  correlation = basis @ np.diag([4.0, 1.0, 0.0]) @ basis.T
  predictor = np.asarray(losses.direct_predictor(jnp.array(correlation, jnp.float32), eps=0.1))
  np.testing.assert_allclose(predictor, basis @ np.diag([1.1, 0.6, 0.1]) @ basis.T, atol=1e-5)
  np.testing.assert_allclose(predictor, predictor.T, atol=1e-6)


def test_direct_predictor_is_a_constant_for_the_gradient():
  correlation = jnp.array([[2.0, 0.5], [0.5, 1.0]])
  grad = jax.grad(lambda c: jnp.sum(losses.direct_predictor(c)))(correlation)
  np.testing.assert_array_equal(grad, 0.0)


def test_simsiam_direct_state_is_the_running_correlation():
  config = helpers.tiny_config(importlib.import_module("configs.simsiam").get_config(),
                               **{"model.projector_hidden_dim": 16, "model.projection_dim": 8, "model.predictor_hidden_dim": 4})
  config.unlock()
  config.simsiam.predictor = "direct"
  method = methods.make_method(config, num_classes=0)
  params, extra = method.init(jax.random.key(0))
  assert "predictor" not in params  # nothing to learn: the predictor is set from the state
  np.testing.assert_array_equal(extra["projection_correlation"], 0.0)
  views = [jnp.asarray(np.random.default_rng(i).random((8, 16, 16, 3)), jnp.float32) for i in range(2)]
  outputs = tuple(method._forward(params, extra["batch_stats"], v)[0] for v in views)
  _, state = method.complete_outputs(outputs, {"projection_correlation": extra["projection_correlation"]})
  z = np.concatenate([np.asarray(o["projection"], np.float64) for o in outputs])
  np.testing.assert_allclose(state["projection_correlation"], (1 - config.simsiam.direct_rho) * z.T @ z / len(z), rtol=1e-4, atol=1e-6)


def _simsiam_with_local_crops(name="simsiam", num_local=2):
  config = helpers.tiny_config(importlib.import_module(f"configs.{name}").get_config(),
                               **{"model.projector_hidden_dim": 16, "model.projection_dim": 8})
  config.unlock()
  config.augment.local_views = dict(config.augment.views[0].to_dict(), size=8, crop_scale=(0.1, 0.3), num=num_local)
  return config


def test_simsiam_local_crops_predict_the_global_ones():
  """Local crops change the loss (they are predictions) and the network still gets gradients."""
  config = _simsiam_with_local_crops()
  method = methods.make_method(config, num_classes=0)
  params, extra = method.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = {"view0": rng.integers(0, 256, (4, 16, 16, 3), np.uint8), "view1": rng.integers(0, 256, (4, 16, 16, 3), np.uint8),
           "local_views": rng.integers(0, 256, (4, 2, 8, 8, 3), np.uint8)}
  loss, aux = method.loss(params, extra, batch, jax.random.key(1), 0)
  assert -1.0 <= float(loss) <= 1.0
  without_local, _ = method.loss(params, extra, {k: batch[k] for k in ("view0", "view1")}, jax.random.key(1), 0)
  assert float(loss) != float(without_local)
  param_grads = jax.grad(lambda p: method.loss(p, extra, batch, jax.random.key(1), 0)[0])(params)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(param_grads["backbone"])) > 0


@pytest.mark.parametrize("name", ("barlow_twins", "vicreg"))
def test_two_view_methods_reject_local_crops(name):
  config = _simsiam_with_local_crops(name)
  with pytest.raises(ValueError, match="does not use multi-crop's local crops.*set it to 0"):
    methods.make_method(config, num_classes=0)


def test_simsiam_rejects_an_unknown_predictor():
  config = importlib.import_module("configs.simsiam").get_config()
  config.simsiam.predictor = "mlp"
  with pytest.raises(ValueError, match="config.simsiam.predictor is 'mlp'; choose one of"):
    methods.make_method(config, num_classes=0)


def _sgd_config(**overrides):
  settings = {"optimizer.name": "sgd", "optimizer.weight_decay": 0.0, "optimizer.momentum": 0.0,
              "optimizer.warmup_steps": 2, "total_steps": 10}
  config = helpers.tiny_byol_config(**settings)
  config.unlock()
  for key, value in overrides.items():
    config.optimizer[key] = value
  return config


def test_constant_lr_module_keeps_the_peak_while_the_rest_decays():
  config = _sgd_config(constant_lr_modules=("predictor",))
  params = {"predictor": {"bias": jnp.ones(2)}, "backbone": {"bias": jnp.ones(2)}}
  grads = jax.tree.map(jnp.ones_like, params)
  tx = optim.make_optimizer(config)
  opt_state = tx.init(params)
  peak = 0.2 * config.batch_size / 256
  schedule = optim.learning_rate_schedule(config)
  for step in range(config.total_steps):
    updates, opt_state = tx.update(grads, opt_state, params)
    # Plain SGD on a gradient of ones: the update is minus the learning rate.
    np.testing.assert_allclose(updates["predictor"]["bias"], -peak, rtol=1e-6)
    np.testing.assert_allclose(updates["backbone"]["bias"], -float(schedule(step)), rtol=1e-6, atol=1e-9)
  # The default schedule really warmed up and decayed over those steps.
  assert float(schedule(0)) == 0.0 and float(schedule(config.total_steps - 1)) < 0.05 * peak


def test_constant_lr_module_combines_with_a_multiplier():
  config = _sgd_config(constant_lr_modules=("predictor",), lr_multipliers={"predictor": 10.0})
  rates = optim.module_learning_rates(config)
  peak = 0.2 * config.batch_size / 256
  np.testing.assert_allclose([float(rates["predictor"](k)) for k in (0, 5, 9)], 10 * peak, rtol=1e-6)
  assert "backbone" not in rates


def test_final_learning_rate_fraction():
  config = _sgd_config(final_learning_rate_fraction=1e-3)
  peak = 0.2 * config.batch_size / 256
  np.testing.assert_allclose(float(optim.learning_rate_schedule(config)(config.total_steps)), 1e-3 * peak, rtol=1e-5)


def test_simsiam_presets_follow_the_paper():
  """The CPU presets' departures (DirectPred, greyscale views, larger crops) stay out of the paper's."""
  simsiam = importlib.import_module("configs.simsiam")
  assert simsiam.get_config().simsiam.predictor == "direct"
  for preset, base_lr in (("cifar10", 0.03), ("imagenet", 0.05)):
    c = simsiam.get_config(preset)
    assert c.simsiam.predictor == "learned" and c.optimizer.constant_lr_modules == ("predictor",)
    assert c.optimizer.base_learning_rate == base_lr
    for view in c.augment.views:  # MoCo v2's augmentation (SimSiam, appendix A)
      assert (view.brightness, view.contrast, view.saturation, view.hue, view.grayscale_prob) == (0.4, 0.4, 0.4, 0.1, 0.2)
      assert tuple(view.crop_scale) == (0.2, 1.0)
    assert c.augment.local_views.num == 0  # the paper has two views only
