"""Transitive invariance: the graph of a hand-made batch, the triplet loss by hand, negatives,
one step on 1 vs 8 devices."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import transitive_invariance as transitive_config
from jaxssl import methods, optim, parallel, train
from jaxssl.errors import UserError
from jaxssl.methods import transitive_invariance as ti
from jaxssl.transforms import augment
from tests import helpers

IDENTITY = augment.AugmentSpec(brightness=0, contrast=0, saturation=0, hue=0, jitter_prob=0, grayscale_prob=0, blur_prob=0, solarize_prob=0)


def test_nearest_neighbours_skip_the_row_itself():
  embeddings = jnp.asarray([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 1.0]])
  assert ti.nearest_neighbours(embeddings).tolist() == [1, 0, 3, 2]


def test_graph_and_transitive_pairs_of_a_hand_made_batch():
  """Images 0, 1, 2 with views 0-2 (first) and 3-5 (second); image 0's neighbour is 1, and 1's
  and 2's neighbour is 0."""
  intra, inter = ti.view_graph(jnp.asarray([1, 0, 0]))
  edges = lambda a: {(int(i), int(j)) for i, j in zip(*np.nonzero(np.asarray(a)))}
  assert edges(intra) == {(0, 3), (3, 0), (1, 4), (4, 1), (2, 5), (5, 2)}
  assert edges(inter) == {(0, 1), (1, 0), (0, 2), (2, 0)}
  # Brute force: a ~ c when a-b is one kind of edge and b-c the other, minus edges and self-pairs.
  expected = set()
  for a, b, c in itertools.product(range(6), repeat=3):
    if ((a, b) in edges(intra) and (b, c) in edges(inter)) or ((a, b) in edges(inter) and (b, c) in edges(intra)):
      expected.add((a, c))
  expected -= edges(intra) | edges(inter) | {(a, a) for a in range(6)}
  assert expected == {(0, 4), (4, 0), (3, 1), (1, 3), (0, 5), (5, 0), (3, 2), (2, 3)}  # e.g. 0 ~ 1's second view
  assert edges(ti.transitive_pairs(intra, inter)) == expected


def test_triplet_ranking_loss_by_hand():
  rng = np.random.default_rng(0)
  embeddings = rng.normal(size=(4, 3))
  positives = np.zeros((4, 4), bool)
  positives[0, 1] = positives[1, 0] = positives[2, 3] = True
  negatives = np.array([2, 3, 0, 1])
  unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
  distance = 1 - unit @ unit.T
  hinges = [max(0.0, distance[a, p] - distance[a, negatives[a]] + 0.5) for a, p in zip(*np.nonzero(positives))]
  loss = ti.triplet_ranking_loss(jnp.asarray(embeddings), jnp.asarray(positives), jnp.asarray(negatives), 0.5)
  np.testing.assert_allclose(loss, np.mean(hinges), rtol=1e-5)
  # Every negative of each anchor: the hinges of its triplets averaged per positive pair.
  every = np.ones((4, 4), bool) & ~np.eye(4, dtype=bool) & ~positives
  per_pair = [np.mean([max(0.0, distance[a, p] - distance[a, n] + 0.5) for n in np.nonzero(every[a])[0]]) for a, p in zip(*np.nonzero(positives))]
  loss = ti.triplet_ranking_loss(jnp.asarray(embeddings), jnp.asarray(positives), jnp.asarray(every), 0.5)
  np.testing.assert_allclose(loss, np.mean(per_pair), rtol=1e-5)


def test_negatives_are_never_related_nor_the_anchor():
  intra, inter = ti.view_graph(jnp.asarray([1, 0, 3, 2, 0, 1, 2, 3]))
  related = np.asarray(intra | inter | ti.transitive_pairs(intra, inter))
  for seed in range(5):
    negatives = np.asarray(ti.sample_negatives(jax.random.key(seed), jnp.asarray(related)))
    assert not related[np.arange(16), negatives].any() and (negatives != np.arange(16)).all()


def test_hardest_negative_is_the_closest_unrelated_view():
  embeddings = jnp.asarray([[1.0, 0.0], [0.9, 0.1], [0.8, 0.3], [-1.0, 0.0]])
  related = jnp.zeros((4, 4), bool).at[0, 1].set(True).at[1, 0].set(True)
  assert ti.hardest_negatives(embeddings, related).tolist() == [2, 2, 1, 2]


@pytest.fixture(scope="module")
def setup():
  config = helpers.tiny_config(transitive_config.get_config("quick"), **{"model.projector_hidden_dim": 16, "model.projection_dim": 8, "transitive.graph_start_step": 0})
  method = methods.make_method(config, num_classes=10)
  rng = np.random.default_rng(0)
  batch = {
      "view0": rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8),
      "view1": rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8),
      "label": np.arange(16, dtype=np.int32) % 10,
  }
  tx = optim.make_optimizer(config)
  state = jax.jit(lambda rng: train.create_train_state(method, tx, rng))(jax.random.key(0))
  return config, method, tx, state, batch



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
    for key in ("loss", "intra_loss", "inter_loss", "transitive_loss", "transitive_pairs_per_view"):
      helpers.assert_trees_close(metrics1[key], metrics8[key], 1e-5)
    assert float(metrics1["transitive_loss"]) > 0 and float(metrics1["transitive_pairs_per_view"]) >= 1
    helpers.assert_trees_close(state1.params, state8.params, 1e-5)
    helpers.assert_trees_close(state1.extra, state8.extra, 1e-5)
  finally:
    jax.config.update("jax_enable_x64", False)
    method.view_specs = saved


def test_config_mistakes_name_the_fix():
  with pytest.raises(UserError, match="config.transitive.margin"):
    methods.make_method(helpers.tiny_config(transitive_config.get_config("quick"), **{"transitive.margin": 0.0}))
  with pytest.raises(UserError, match="two views"):
    methods.make_method(helpers.tiny_config(transitive_config.get_config("quick"), **{"augment.views": [transitive_config._view(16)]}))


def test_the_graph_joins_at_its_start_step(setup):
  _, method, _, state, batch = setup
  loss = jax.jit(lambda step: method.loss(state.params, state.extra, batch, jax.random.key(1), step))
  (total_on, aux_on), (total_off, _) = loss(0), loss(-1)  # graph_start_step is 0 in this config
  m = aux_on["metrics"]
  np.testing.assert_allclose(total_on - total_off, m["inter_loss"] + m["transitive_loss"], rtol=1e-4)
