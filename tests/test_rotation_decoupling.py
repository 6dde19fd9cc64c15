"""Rotation feature decoupling: the PU weights by hand, the loss's parts, the recorded upright
probabilities, and one step on 1 vs 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import methods, optim, train
from jaxssl.methods import rotation_decoupling
from tests import helpers
from tests.test_moco import _batch, compare_one_step_float64

from configs import rotation_decoupling as decoupling_config  # noqa: E402


def test_positive_unlabelled_weights_by_hand():
  p = jnp.array([[0.9, 0.5, 0.0, 1.0], [0.2, 0.1, 0.3, 0.7]])
  expected = [[1.0, 1 - 0.25, 1.0, 0.0], [1.0, 1 - 0.01, 1 - 0.09, 1 - 0.49]]  # w = 1 - p^2; 1 upright
  np.testing.assert_allclose(rotation_decoupling.positive_unlabelled_weights(p, 2.0), expected, rtol=1e-6)


@pytest.fixture(scope="module")
def setup():
  config = helpers.tiny_config(
      decoupling_config.get_config("quick"), **{"model.projection_dim": 8, "npid.bank_size": 1440, "decoupling.pu_start_step": 1, "decoupling.feature_dim": 16}
  )
  method = methods.make_method(config, num_classes=10)
  tx = optim.make_optimizer(config)
  state = train.create_train_state(method, tx, jax.random.key(0))
  return config, method, tx, state, _batch(config)


def test_loss_parts_and_pu_weights_switch_on_at_their_step(setup):
  config, method, _, state, batch = setup
  params, extra = state.params, dict(state.extra)
  loss_at = lambda extra, step: method.loss(params, extra, batch, jax.random.key(1), jnp.asarray(step))
  total, aux = loss_at(extra, 0)
  metrics = aux["metrics"]
  weights = config.decoupling
  expected = sum(w * metrics[k] for w, k in ((weights.rotation_weight, "rotation_loss"), (weights.invariance_weight, "invariance_loss"), (weights.instance_weight, "instance_loss")))
  np.testing.assert_allclose(total, expected + metrics["probe_loss"], rtol=1e-5)
  assert metrics["invariance_loss"] > 0 and metrics["mean_pu_weight"] == 1.0
  probabilities = np.asarray(aux["upright_probability"])
  assert probabilities.shape == (config.batch_size, 4) and np.all((probabilities >= 0) & (probabilities <= 1))
  # Every rotated input recorded as surely upright: from pu_start_step its loss weighs 0, so the
  # rotation loss is the upright inputs' share alone (a quarter of the inputs, weight 1).
  extra["upright_probability"] = jnp.ones_like(extra["upright_probability"])
  _, before = loss_at(extra, 0)
  _, after = loss_at(extra, 1)
  assert float(after["metrics"]["mean_pu_weight"]) == pytest.approx(0.25)
  assert float(after["metrics"]["rotation_loss"]) < float(before["metrics"]["rotation_loss"])


def test_after_update_records_upright_probabilities_of_the_batch(setup):
  _, method, _, state, batch = setup
  _, aux = method.loss(state.params, state.extra, batch, jax.random.key(1), jnp.asarray(0))
  new_extra = method.after_update(state, aux)
  recorded = np.asarray(new_extra["upright_probability"])[np.asarray(batch["index"])]
  np.testing.assert_allclose(recorded, aux["upright_probability"], rtol=1e-6)


def test_one_step_same_on_1_and_8_devices_float64(setup):
  config, method, tx, state, batch = setup
  loss, _, new_state = compare_one_step_float64(method, tx, config, state, {k: batch[k] for k in ("view0", "label", "index")})
  assert np.isfinite(loss)
  changed = np.any(new_state.extra["upright_probability"] != 0, axis=-1)
  np.testing.assert_array_equal(np.flatnonzero(changed), np.sort(batch["index"]))
