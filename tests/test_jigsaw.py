"""Jigsaw and DeepPermNet: tile geometry, the permutation set, Sinkhorn, the losses by hand, and
one step on 1 vs 8 devices for each head."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import methods, optim, train
from jaxssl.transforms import pretext
from tests import helpers
from tests.test_moco import _batch, compare_one_step_float64

from configs import deeppermnet as deeppermnet_config  # noqa: E402
from configs import jigsaw as jigsaw_config  # noqa: E402


def test_tiles_sit_inside_their_cells_with_random_gaps():
  """Each tile is a tile_size crop of its own cell: an image whose pixels hold their own (row,
  column) lets every tile's origin be read back."""
  size, tile = 24, 6  # cells of 8 px: a tile may start anywhere in 0..2 px into its cell
  rows, cols = jnp.meshgrid(jnp.arange(size), jnp.arange(size), indexing="ij")
  images = jnp.broadcast_to(jnp.stack([rows, cols, rows * 0], -1).astype(jnp.float32), (64, size, size, 3))
  tiles = np.asarray(pretext.puzzle_tiles(jax.random.key(0), images, tile))
  assert tiles.shape == (64, 9, tile, tile, 3)
  top, left = tiles[:, :, 0, 0, 0], tiles[:, :, 0, 0, 1]
  cell_row, cell_col = np.divmod(np.arange(9), 3)
  offset_row, offset_col = top - 8 * cell_row, left - 8 * cell_col
  assert offset_row.min() == 0 and offset_row.max() == 2 and offset_col.min() == 0 and offset_col.max() == 2
  # Each tile is a contiguous crop (no resampling).
  np.testing.assert_array_equal(tiles[..., 0], np.broadcast_to(top[..., None, None] + np.arange(tile)[:, None], tiles.shape[:-1]))
  with pytest.raises(ValueError, match="do not fit"):
    pretext.puzzle_tiles(jax.random.key(0), images, 9)


def test_permutation_set_reaches_the_brute_force_best_minimum_distance():
  def min_distance(perms):
    return min(int((a != b).sum()) for a, b in itertools.combinations(np.asarray(perms), 2))

  # Small sets where the greedy choice is optimal: the brute-force best minimum distance.
  for tiles, size in ((4, 4), (3, 3)):
    greedy = pretext.hamming_permutation_set(size, tiles)
    best = max(min_distance(subset) for subset in itertools.combinations(itertools.permutations(range(tiles)), size))
    assert min_distance(greedy) == best, (tiles, size)
  # In general each permutation is, by brute force over all others, one farthest (max-min) from
  # those chosen before it (Algorithm 1); greedy need not be optimal (4 tiles, 6 permutations).
  for tiles, size in ((4, 6), (5, 12)):
    greedy = [tuple(p) for p in pretext.hamming_permutation_set(size, tiles)]
    assert len(set(greedy)) == size
    for k in range(1, size):
      distance_to_chosen = lambda p: min(sum(a != b for a, b in zip(p, q)) for q in greedy[:k])
      best = max(distance_to_chosen(p) for p in itertools.permutations(range(tiles)) if p not in greedy[:k])
      assert distance_to_chosen(greedy[k]) == best, (tiles, size, k)
  big = pretext.hamming_permutation_set(100)
  assert big.shape == (100, 9) and min_distance(big) >= 6
  np.testing.assert_array_equal(big, pretext.hamming_permutation_set(100))  # deterministic


def test_sinkhorn_rows_and_columns_sum_to_one():
  scores = jax.nn.softmax(jax.random.normal(jax.random.key(0), (5, 81)) * 3).reshape(5, 9, 9)
  s = pretext.sinkhorn_normalize(scores, iterations=20)
  np.testing.assert_allclose(s.sum(-1), 1.0, atol=1e-3)
  np.testing.assert_allclose(s.sum(-2), 1.0, atol=1e-3)
  one = pretext.sinkhorn_normalize(scores, iterations=1)  # the official single pass: columns exact
  np.testing.assert_allclose(one.sum(-2), 1.0, atol=1e-6)


def test_shuffle_and_permutation_matrix_agree():
  tiles = jnp.arange(2 * 9, dtype=jnp.float32).reshape(2, 9, 1, 1, 1)
  permutations = jnp.array([[8, 7, 6, 5, 4, 3, 2, 1, 0], [1, 2, 0, 4, 5, 3, 7, 8, 6]])
  shuffled = pretext.shuffle_tiles(tiles, permutations)
  np.testing.assert_array_equal(shuffled[..., 0, 0, 0], np.asarray(tiles[..., 0, 0, 0])[np.arange(2)[:, None], permutations])
  matrices = pretext.permutation_matrices(permutations)
  # Position j shows tile M[j].argmax().
  np.testing.assert_array_equal(matrices.argmax(-1), permutations)
  np.testing.assert_array_equal(matrices.sum(-1), 1.0)
  np.testing.assert_array_equal(matrices.sum(-2), 1.0)


def _setup(config_module):
  config = helpers.tiny_config(config_module.get_config("quick"), **{"jigsaw.tile_size": 4, "jigsaw.tile_dim": 8, "jigsaw.hidden_dim": 16, "jigsaw.num_permutations": 10})
  method = methods.make_method(config, num_classes=10)
  tx = optim.make_optimizer(config)
  state = train.create_train_state(method, tx, jax.random.key(0))
  return config, method, tx, state, _batch(config)


@pytest.fixture(scope="module", params=["jigsaw", "deeppermnet"])
def setup(request):
  return _setup(jigsaw_config if request.param == "jigsaw" else deeppermnet_config)


def test_puzzle_loss_by_hand(setup):
  _, method, _, _, _ = setup
  logits = jax.random.normal(jax.random.key(2), (3, method.config.jigsaw.num_permutations if method.config.jigsaw.head == "classification" else 81))
  if method.config.jigsaw.head == "classification":
    labels = jnp.array([0, 4, 9])
    expected = -np.mean(np.asarray(jax.nn.log_softmax(logits))[np.arange(3), labels])
  else:
    labels = jnp.stack([jnp.arange(9), jnp.arange(9)[::-1], jnp.roll(jnp.arange(9), 1)])
    p = np.exp(np.asarray(logits, np.float64))
    p = (p / p.sum(1, keepdims=True)).reshape(3, 9, 9) + 1e-3
    p = p / p.sum(-1, keepdims=True)
    p = p / p.sum(-2, keepdims=True)
    expected = -np.log(p[np.arange(3)[:, None], np.arange(9)[None], np.asarray(labels)]).sum() / 3
  loss, _ = method.puzzle_loss(logits, labels)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_one_step_same_on_1_and_8_devices_float64(setup):
  config, method, tx, state, batch = setup
  loss, _, _ = compare_one_step_float64(method, tx, config, state, {k: batch[k] for k in ("view0", "label")})
  assert np.isfinite(loss)
