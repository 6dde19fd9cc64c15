"""Exemplar: the surrogate-class loss by hand, its class weights split over devices by rows
(with their momentum), and one step on 1 vs 8 devices."""

import jax
import numpy as np
import pytest

from jaxssl import methods, optim, parallel, train
from jaxssl.methods import common
from tests import helpers
from tests.test_moco import _batch, compare_one_step_float64

from configs import exemplar as exemplar_config  # noqa: E402


@pytest.fixture(scope="module")
def setup():
  config = helpers.tiny_config(exemplar_config.get_config("quick"), **{"model.projection_dim": 8, "model.head_hidden_dim": 16, "exemplar.num_exemplars": 1440})
  method = methods.make_method(config, num_classes=10)
  tx = optim.make_optimizer(config)
  state = train.create_train_state(method, tx, jax.random.key(0))
  return config, method, tx, state, _batch(config)


def test_loss_is_a_softmax_over_every_exemplar(setup):
  _, method, _, state, batch = setup
  params, extra = state.params, state.extra
  _, aux = method.loss(params, extra, batch, jax.random.key(1), 0)
  (images,) = common.view_images(jax.random.key(1), (batch["view0"],), method.view_specs[:1])
  features, _ = method.backbone(params["backbone"], extra["batch_stats"]["backbone"], images, train=True)
  projection, _ = method.head(params["head"], extra["batch_stats"]["head"], features, train=True)
  logits = np.asarray(projection, np.float64) @ np.asarray(params["classifier"]["weight"], np.float64).T + np.asarray(params["classifier"]["bias"])
  assert logits.shape == (len(images), 1440)
  log_probs = logits - logits.max(1, keepdims=True)
  log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
  expected = -np.mean(log_probs[np.arange(len(images)), np.asarray(batch["index"])])
  np.testing.assert_allclose(aux["metrics"]["exemplar_loss"], expected, rtol=1e-4)


def test_class_weights_and_their_momentum_are_split_by_rows(setup):
  _, method, _, state, _ = setup
  shardings = train.state_shardings(method, parallel.make_mesh(), jax.eval_shape(lambda: state))
  assert shardings.params["classifier"]["weight"].spec == jax.sharding.PartitionSpec(parallel.DATA_AXIS)
  assert shardings.params["classifier"]["bias"].spec == jax.sharding.PartitionSpec(parallel.DATA_AXIS)
  assert shardings.params["backbone"] and all(s.spec == jax.sharding.PartitionSpec() for s in jax.tree.leaves(shardings.params["backbone"]))
  split = [
      jax.tree_util.keystr(path) for path, s in jax.tree_util.tree_leaves_with_path(shardings.opt_state)
      if s.spec == jax.sharding.PartitionSpec(parallel.DATA_AXIS)
  ]
  assert split and all("classifier" in path for path in split)


def test_one_step_same_on_1_and_8_devices_float64(setup):
  config, method, tx, state, batch = setup
  loss, _, new_state = compare_one_step_float64(method, tx, config, state, {k: batch[k] for k in ("view0", "label", "index")})
  assert np.isfinite(loss)
  # The rows of this batch's exemplars moved most.
  moved = np.abs(new_state.params["classifier"]["bias"] - np.asarray(state.params["classifier"]["bias"], np.float64))
  assert set(np.argsort(moved)[-len(batch["index"]):]) == set(np.asarray(batch["index"]).tolist())
