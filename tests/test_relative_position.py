"""Relative position: the patch-pair geometry of all 8 positions, the colour and aperture
counter-measures, the loss by hand, and one step on 1 vs 8 devices (plain and Mundhenk)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import methods, optim, train
from jaxssl.transforms import pretext
from tests import helpers
from tests.test_moco import _batch, compare_one_step_float64

from configs import relative_position as relative_position_config  # noqa: E402


def test_pairs_place_each_neighbour_at_its_labelled_position():
  """An image whose pixels hold their (row, column): each pair's neighbour lies one cell away
  from the centre in the direction its label names (0 top-left ... 7 bottom-right)."""
  size, patch = 24, 6
  rows, cols = jnp.meshgrid(jnp.arange(size), jnp.arange(size), indexing="ij")
  images = jnp.broadcast_to(jnp.stack([rows, cols, rows * 0], -1).astype(jnp.float32), (16, size, size, 3))
  tiles = pretext.puzzle_tiles(jax.random.key(0), images, patch)
  centres, neighbours, labels = pretext.centre_neighbour_pairs(tiles)
  assert centres.shape == (16, patch, patch, 3) and neighbours.shape == (16, 8, patch, patch, 3)
  np.testing.assert_array_equal(labels[0], np.arange(8))
  centre_cell = np.asarray(centres[:, 0, 0, :2]) // 8  # (row, column) cell of each centre
  np.testing.assert_array_equal(centre_cell, np.ones((16, 2)))
  directions = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
  cells = np.asarray(neighbours[:, :, 0, 0, :2]) // 8
  np.testing.assert_array_equal(cells - centre_cell[:, None], np.broadcast_to(np.array(directions), (16, 8, 2)))
  # Yoked jitter: one offset per image, the same in every cell.
  yoked = np.asarray(pretext.puzzle_tiles(jax.random.key(1), images, patch, shared_offset=True))[:, :, 0, 0, :2] % 8
  assert np.all(yoked == yoked[:, :1]) and len(np.unique(yoked[:, 0, 0])) > 1


def test_colour_counter_measures():
  patches = jax.random.uniform(jax.random.key(0), (32, 8, 8, 3))
  dropped = np.asarray(pretext.drop_colour(jax.random.key(1), patches))
  means = np.abs(dropped.mean(axis=(1, 2)))
  assert np.all(means.min(-1) < 1e-6)  # the kept channel is mean-subtracted; the others are noise
  projected = pretext.project_out_green_magenta(patches)
  np.testing.assert_allclose(projected @ np.array([-1.0, 2.0, -1.0]), 0.0, atol=1e-5)
  # Chroma blur keeps each pixel's luma and smooths only colour.
  blurred = pretext.blur_chroma(patches, 1.5)
  luma = np.array([0.299, 0.587, 0.114])
  np.testing.assert_allclose(np.asarray(blurred) @ luma, np.asarray(patches) @ luma, atol=1e-5)
  chroma = lambda x: np.asarray(x) - (np.asarray(x) @ luma)[..., None]
  assert np.std(chroma(blurred)) < 0.6 * np.std(chroma(patches))
  aperture = np.asarray(pretext.random_aperture(jax.random.key(2), jnp.ones((64, 8, 8, 1)), 1.0))
  kept = aperture.reshape(64, -1).sum(1)
  assert kept.min() >= 16 and kept.max() <= 64 and (kept < 64).any()  # windows of 4-8 px a side


def _setup(preset):
  config = helpers.tiny_config(relative_position_config.get_config(preset), **{"relative_position.patch_size": 4, "relative_position.hidden_dim": 16})
  method = methods.make_method(config, num_classes=10)
  tx = optim.make_optimizer(config)
  state = train.create_train_state(method, tx, jax.random.key(0))
  return config, method, tx, state, _batch(config)


@pytest.fixture(scope="module", params=["quick", "quick,mundhenk"])
def setup(request):
  return _setup(request.param)


def test_one_step_same_on_1_and_8_devices_float64(setup):
  config, method, tx, state, batch = setup
  loss, _, _ = compare_one_step_float64(method, tx, config, state, {k: batch[k] for k in ("view0", "label")})
  assert np.isfinite(loss)
  _, aux = method.loss(state.params, state.extra, batch, jax.random.key(1), 0)
  metrics = aux["metrics"]
  # Untrained, the 8-way position loss is near log 8 and the 4-way rotation loss near log 4.
  assert abs(float(metrics["position_loss"]) - np.log(8)) < 0.7
  if config.relative_position.rotation_loss_weight:
    assert abs(float(metrics["rotation_loss"]) - np.log(4)) < 0.7
