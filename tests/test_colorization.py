"""Colorization: the loss by hand on a tiny batch, one step on 1 vs 8 devices, the samples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import methods, optim, train
from jaxssl.methods import colorization
from jaxssl.transforms import augment, colour
from tests import helpers
from tests.test_moco import _batch, compare_one_step_float64

from configs import colorization as colorization_config  # noqa: E402


@pytest.fixture(scope="module")
def setup():
  # Scenes, not the tiny default digits: those are grey, and grey images carry no colour loss.
  config = helpers.tiny_config(colorization_config.get_config("quick"), **{"colorization.target_cells": 4, "data.name": "builtin:scenes"})
  method = methods.make_method(config, num_classes=10)
  tx = optim.make_optimizer(config)
  state = train.create_train_state(method, tx, jax.random.key(0))
  return config, method, tx, state, _batch(config)


def test_loss_by_hand(setup):
  """Soft targets over the 10 nearest bins (sigma 5) at the cell centres, rebalancing weights
  from the prior counted so far, no weight for a colourless image, cross-entropy."""
  config, method, _, state, batch = setup
  params, extra = state.params, state.extra
  _, aux = method.loss(params, extra, batch, jax.random.key(1), 0)
  rgb = np.asarray(augment.augment_images(jax.random.key(1), batch["view0"], method.view_specs[0]))
  logits, _, _ = method.predict(params, extra, jnp.asarray(rgb), train=True)
  logits = np.asarray(logits, np.float64)
  lab = np.asarray(colour.srgb_to_lab(jnp.asarray(rgb)), np.float64)
  centres = (np.arange(4) * 16 + 8) // 4  # cell centres of a 16 px image on a 4 x 4 grid
  ab = lab[:, centres][:, :, centres][..., 1:]
  bins = method.bins.astype(np.float64)
  distance = np.sqrt(((ab[..., None, :] - bins) ** 2).sum(-1))
  targets = np.zeros_like(distance)
  nearest10 = np.argsort(distance, axis=-1)[..., :10]
  gauss = np.exp(-np.take_along_axis(distance, nearest10, -1) ** 2 / 50.0)
  np.put_along_axis(targets, nearest10, gauss / gauss.sum(-1, keepdims=True), -1)
  nearest = targets.argmax(-1)
  counts = np.bincount(nearest.ravel(), minlength=len(bins)).astype(np.float64)
  prior = counts / counts.sum()  # the counts before this batch are zero
  weights = 1.0 / (0.5 * prior + 0.5 / len(bins))
  weights /= (prior * weights).sum()
  coloured = np.abs(lab[..., 1:]).max(axis=(1, 2, 3)) > 5.0
  log_softmax = logits - logits.max(-1, keepdims=True)
  log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))
  cross_entropy = -(targets * log_softmax).sum(-1)
  expected = (weights[nearest] * coloured[:, None, None] * cross_entropy).sum() / (coloured.sum() * 16)
  np.testing.assert_allclose(aux["metrics"]["colour_loss"], expected, rtol=1e-4)
  np.testing.assert_array_equal(aux["colour_counts"], counts)


def test_one_step_same_on_1_and_8_devices_float64(setup):
  config, method, tx, state, batch = setup
  loss, _, new_state = compare_one_step_float64(method, tx, config, state, {k: batch[k] for k in ("view0", "label")})
  assert np.isfinite(loss) and int(new_state.step) == 1
  assert float(new_state.extra["colour_counts"].sum()) == 16 * config.batch_size  # 4 x 4 cells per image


def test_lightness_input_and_samples(setup):
  _, method, _, state, batch = setup
  rgb = augment.to_float_image(batch["view0"][:2])
  x = np.asarray(colorization.lightness_input(rgb))
  np.testing.assert_array_equal(x[..., 0], x[..., 1])  # grey: the same on every channel
  assert -1.0 <= x.min() and x.max() <= 1.0
  # embed undoes the normalisation: it sees the lightness of the images it is given
  np.testing.assert_allclose(colorization.unnormalize(augment.normalize(rgb)), rgb, atol=1e-6)
  columns = method.sample_grid(state.params, state.extra, batch["view0"][:2])
  assert set(columns) == {"lightness (input)", "colorized", "original"}
  assert all(v.shape == rgb.shape for v in columns.values())
  # The colorized image keeps the input's lightness, but where its colour falls outside sRGB and
  # is clipped (bright pixels given a strong colour).
  change = np.abs(np.asarray(colour.srgb_to_lab(columns["colorized"])[..., 0] - colour.srgb_to_lab(rgb)[..., 0]))
  assert np.mean(change) < 1.0 and np.mean(change < 0.5) > 0.8


def test_a_bins_file_replaces_the_derived_bins(tmp_path):
  path = tmp_path / "bins.npy"
  np.save(path, np.array([[0, 0], [10, 10], [-10, 20]]))
  assert colorization.load_bins(str(path)).shape == (3, 2)
  np.save(path, np.zeros((3, 3)))
  with pytest.raises(ValueError, match=r"\[Q, 2\]"):
    colorization.load_bins(str(path))
  assert colorization.load_bins("").shape == (261, 2)


def test_grey_images_carry_no_colour_loss(setup):
  _, method, _, state, batch = setup
  grey = np.repeat(np.asarray(batch["view0"]).mean(-1, keepdims=True).astype(np.uint8), 3, axis=-1)
  _, aux = method.loss(state.params, state.extra, {**batch, "view0": jnp.asarray(grey)}, jax.random.key(1), 0)
  assert float(aux["metrics"]["colour_loss"]) == 0.0
