"""NPID: memory bank and NCE normaliser in the train state, the index requirement, presets, and
one train step on 1 vs 8 simulated devices (memory bank sharded by rows)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxssl import methods, optim, train
from jaxssl.data import sources
from jaxssl.errors import UserError
from tests import helpers  # also puts the repository root on sys.path for `configs`
from tests.test_moco import IDENTITY, _batch, compare_one_step_float64

from configs import npid as npid_config

_BANK = 1440  # >= the 1437 training digits, and a multiple of 8 so the bank is sharded


def tiny_config(preset: str = "", **overrides) -> ml_collections.ConfigDict:
  defaults = {"model.projection_dim": 8, "npid.num_negatives": 32, "npid.bank_size": _BANK, "data.train_examples": 0,
              "model.head_hidden_dim": 16}
  return helpers.tiny_config(npid_config.get_config(preset), **{**defaults, **overrides})

@pytest.fixture(scope="module")
def setup():
  config = tiny_config("nce")
  method = methods.make_method(config, num_classes=10)
  tx = optim.make_optimizer(config)
  state = train.create_train_state(method, tx, jax.random.key(0))
  batch = {k: v for k, v in _batch(config).items() if k in ("view0", "label", "index")}
  return config, method, tx, state, batch


def test_presets_follow_the_paper():
  c = npid_config.get_config("imagenet")
  assert (c.npid.loss, c.npid.temperature, c.npid.bank_momentum, c.npid.num_negatives) == ("nce", 0.07, 0.5, 4096)
  assert (c.model.projection_dim, c.eval.knn_k, c.eval.knn_temperature) == (128, 200, 0.07)
  assert (c.model.head_hidden_dim, c.data.train_examples) == (0, 0)  # one linear layer, every image
  assert npid_config.get_config("imagenet,softmax").npid.loss == "softmax"
  # The CPU presets: full softmax over a 1280-entry bank, a BN hidden layer in the head.
  quick = npid_config.get_config("quick")
  assert (quick.npid.loss, quick.data.train_examples, quick.model.head_batch_norm) == ("softmax", 1280, True)
  assert npid_config.get_config("quick,nce").npid.loss == "nce"
  with pytest.raises(ValueError, match="Unknown preset token"):
    npid_config.get_config("fast")


def test_bank_size_defaults_to_the_records_trained_on():
  # The loop passes len(restrict_to_train_examples(source)): 1437 built-in digits, or 300.
  assert methods.make_method(tiny_config(**{"npid.bank_size": 0}), num_train_examples=1437).bank_size == 1437
  config = tiny_config(**{"npid.bank_size": 0, "data.train_examples": 300})
  source = sources.restrict_to_train_examples(sources.make_source(config.data, "train"), config.data.train_examples)
  assert methods.make_method(config, num_train_examples=len(source)).bank_size == 300
  assert methods.make_method(tiny_config(**{"npid.bank_size": 64}), num_train_examples=1437).bank_size == 64
  with pytest.raises(UserError, match="set its bank_size"):
    methods.make_method(tiny_config(**{"npid.bank_size": 0}))


def test_bank_starts_normalised_and_normaliser_unset(setup):
  _, _, _, state, _ = setup
  bank = np.asarray(state.extra["memory_bank"])
  assert bank.shape == (_BANK, 8)
  np.testing.assert_allclose(np.linalg.norm(bank, axis=-1), 1.0, rtol=1e-5)
  assert np.isnan(state.extra["log_normalizer"])


def test_missing_index_is_a_user_error(setup):
  _, method, _, state, batch = setup
  without_index = {k: v for k, v in batch.items() if k != "index"}
  with pytest.raises(UserError, match="dataset index"):
    jax.eval_shape(lambda: method.loss(state.params, state.extra, without_index, jax.random.key(0), 0))


def test_softmax_loss_is_cross_entropy_over_the_bank():
  config = tiny_config("softmax")
  method = methods.make_method(config)
  params, extra = method.init(jax.random.key(0))
  images = jax.random.uniform(jax.random.key(1), (16, 16, 16, 3))
  batch = {"view0": (images * 255).astype(jnp.uint8), "index": jnp.arange(16, dtype=jnp.int32) * 7}
  method.view_specs = (IDENTITY,)
  loss, aux = jax.jit(lambda p: method.loss(p, extra, batch, jax.random.key(0), 0))(params)
  # Recompute from the embeddings the loss saw: -log softmax_i(v . bank^T / tau).
  v, bank = np.asarray(aux["embeddings"], np.float64), np.asarray(extra["memory_bank"], np.float64)
  logits = v @ bank.T / 0.07
  top = logits.max(1, keepdims=True)
  log_probs = logits - top - np.log(np.sum(np.exp(logits - top), 1, keepdims=True))
  expected = -np.mean(log_probs[np.arange(16), np.asarray(batch["index"])])
  np.testing.assert_allclose(loss, expected, rtol=1e-4)


def test_one_step_same_on_1_and_8_devices_float64(setup):
  config, method, tx, state, batch = setup
  _, _, new_state = compare_one_step_float64(method, tx, config, state, batch)
  # The step fixed NCE's normaliser and refreshed exactly the batch's bank rows.
  assert np.isfinite(new_state.extra["log_normalizer"])
  changed = np.any(new_state.extra["memory_bank"] != np.asarray(state.extra["memory_bank"], np.float64), axis=-1)
  np.testing.assert_array_equal(np.flatnonzero(changed), np.sort(batch["index"]))


def test_weighted_knn_with_k_200():
  """NPID's kNN (k = 200, tau = 0.07): 20 class-1 neighbours at cosine 0.9 win with k = 20, and
  lose with k = 200 to 180 class-0 neighbours at 0.85: 180 e^{0.85/0.07} > 20 e^{0.9/0.07}."""
  from jaxssl.evaluation import knn

  def at_similarity(s, n, direction):
    x = np.zeros((n, 3))
    x[:, 0], x[:, direction] = s, np.sqrt(1 - s**2)
    return x

  train_features = np.concatenate([at_similarity(0.9, 20, 1), at_similarity(0.85, 180, 2), at_similarity(-0.5, 100, 1)])
  train_labels = np.array([1] * 20 + [0] * 180 + [1] * 100)
  test = np.array([[1.0, 0.0, 0.0]])
  assert 180 * np.exp(0.85 / 0.07) > 20 * np.exp(0.9 / 0.07)
  assert knn.knn_predict(train_features, train_labels, test, k=20, temperature=0.07)[0] == 1
  assert knn.knn_predict(train_features, train_labels, test, k=200, temperature=0.07)[0] == 0
