"""Colorization: the loss by hand on a tiny batch, one step on 1 vs 8 devices, the samples."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxssl import methods, models, optim, train
from jaxssl.errors import UserError
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
  from the prior counted so far and smoothed (sigma 5), no weight for a colourless image, cross-entropy."""
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
  kernel = np.exp(-((bins[:, None] - bins[None]) ** 2).sum(-1) / 50.0)  # the paper's smoothing, sigma 5
  prior = kernel @ prior / (kernel @ prior).sum()
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


# --- Larsson et al. (2017)'s hue / chroma histogram head -----------------------------------------


def test_histograms_split_each_value_between_its_two_nearest_bins():
  bins = colorization.LARSSON_BINS
  values = jnp.asarray([0.5 / bins, 1.0 / bins, 0.999, 0.0])
  hue = np.asarray(colorization.interpolated_histogram(values, bins, circular=True))
  chroma = np.asarray(colorization.interpolated_histogram(values, bins, circular=False))
  np.testing.assert_allclose(hue.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(chroma.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(hue[0, 0], 1.0, atol=1e-5)  # exactly a bin centre
  np.testing.assert_allclose(hue[1, :2], [0.5, 0.5], atol=1e-5)  # half way between centres 0 and 1
  np.testing.assert_allclose([hue[2, -1], hue[2, 0]], [0.532, 0.468], atol=1e-3)  # hue wraps around
  np.testing.assert_allclose(chroma[2, -1], 1.0, atol=1e-5)  # chroma does not
  np.testing.assert_allclose([hue[3, -1], hue[3, 0]], [0.5, 0.5], atol=1e-5)
  np.testing.assert_allclose(chroma[3, 0], 1.0, atol=1e-5)


def test_larsson_loss_by_hand():
  rng = np.random.default_rng(0)
  rgb = rng.uniform(size=(2, 3, 3, 3)).astype(np.float32)
  logits = rng.normal(size=(2, 3, 3, 2 * colorization.LARSSON_BINS)).astype(np.float32)
  bins = colorization.LARSSON_BINS

  def histogram(value, circular):
    out = np.zeros(bins)
    position = value * bins - 0.5
    lower = int(np.floor(position))
    weight = position - lower
    for index, mass in ((lower, 1 - weight), (lower + 1, weight)):
      out[index % bins if circular else min(max(index, 0), bins - 1)] += mass
    return out

  def kl(target, logit):
    log_p = logit - np.log(np.sum(np.exp(logit)))
    return sum(t * (np.log(t) - lp) for t, lp in zip(target, log_p) if t > 0)

  expected = []
  for pixel, logit in zip(rgb.reshape(-1, 3), logits.reshape(-1, 2 * bins)):
    r, g, b = pixel.astype(np.float64)
    chroma = max(r, g, b) - min(r, g, b)
    hue = __import__("colorsys").rgb_to_hsv(r, g, b)[0]
    expected.append(kl(histogram(chroma, False), logit[bins:]) + 5.0 * chroma * kl(histogram(hue, True), logit[:bins]))
  np.testing.assert_allclose(colorization.larsson_loss(jnp.asarray(logits), jnp.asarray(rgb)), np.mean(expected), rtol=1e-4)


def test_larsson_decoding_recovers_a_confident_colour():
  """Logits peaked on a colour's hue and chroma bins decode to that colour (to the bin width)."""
  bins = colorization.LARSSON_BINS
  rgb = np.array([[0.8, 0.3, 0.4], [0.2, 0.5, 0.6]], np.float32)
  hue, chroma = (np.asarray(v) for v in colorization.hue_chroma(jnp.asarray(rgb)))
  logits = np.full((2, 2 * bins), -30.0, np.float32)
  for i in range(2):
    logits[i, int(hue[i] * bins)] = logits[i, bins + int(chroma[i] * bins)] = 30.0
  decoded = np.asarray(colorization.larsson_decode(jnp.asarray(logits), jnp.asarray(rgb.mean(-1))))
  np.testing.assert_allclose(decoded.mean(-1), rgb.mean(-1), atol=1e-5)  # the grey level is kept
  np.testing.assert_allclose(decoded, rgb, atol=0.06)


def test_larsson_preset_trains_one_step_on_grey_input():
  config = helpers.tiny_config(colorization_config.get_config("quick,larsson"), **{"colorization.target_cells": 4, "data.name": "builtin:scenes"})
  method = methods.make_method(config)
  assert method.num_outputs == 2 * colorization.LARSSON_BINS
  tx = optim.make_optimizer(config)
  state = train.create_train_state(method, tx, jax.random.key(0))
  batch = {"view0": _batch(config)["view0"]}
  new_state, metrics = jax.jit(train.make_train_step(method, tx, optim.learning_rate_schedule(config)))(state, batch, jax.random.key(1))
  assert np.isfinite(float(metrics["colour_loss"])) and float(metrics["colour_loss"]) > 0
  rgb = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 16, 16, 3)), jnp.float32)
  net_input = np.asarray(method.network_input(rgb))
  np.testing.assert_allclose(net_input[..., 0], 2 * np.asarray(rgb).mean(-1) - 1, atol=1e-6)  # grey, not L
  columns = jax.jit(method.sample_grid)(new_state.params, new_state.extra, (np.asarray(rgb) * 255).astype(np.uint8))
  assert columns["colorized"].shape == (2, 16, 16, 3)
  with pytest.raises(ValueError, match="config.colorization.head"):
    methods.make_method(helpers.tiny_config(colorization_config.get_config("quick"), **{"colorization.head": "histogram"}))


def test_hypercolumn_resizing_by_hand():
  """A coarse block is upsampled bilinearly (half-pixel centres, edges clamped) and a fine one
  averaged with the antialiasing triangle kernel, onto the target grid."""
  a, b = 1.0, 5.0
  coarse = jnp.asarray([[a, b], [a, b]], jnp.float32)[None, :, :, None]  # [1, 2, 2, 1]
  up = np.asarray(colorization.hypercolumn_at(coarse, 4))[0, 0, :, 0]
  np.testing.assert_allclose(up, [a, 0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b, b], rtol=1e-6)
  row = jnp.asarray([1.0, 2.0, 4.0, 8.0], jnp.float32)
  fine = jnp.tile(row[None, :], (4, 1))[None, :, :, None]  # [1, 4, 4, 1]
  down = np.asarray(colorization.hypercolumn_at(fine, 2))[0, 0, :, 0]
  # Output 0 sits at input coordinate 0.5: weights 1 - |d| / 2 = 0.75, 0.75, 0.25, 0 (normalised).
  np.testing.assert_allclose(down, [(0.75 * 1 + 0.75 * 2 + 0.25 * 4) / 1.75, (0.25 * 2 + 0.75 * 4 + 0.75 * 8) / 1.75], rtol=1e-6)


def test_hypercolumn_head_reads_the_last_blocks():
  """The head's first layer takes the last N blocks' channels; logits land on the target grid."""
  config = helpers.tiny_config(
      colorization_config.get_config("quick"),
      **{"colorization.target_cells": 4, "colorization.hypercolumn_blocks": 3, "colorization.head_hidden": 8, "data.name": "builtin:scenes"},
  )
  method = methods.make_method(config, num_classes=0)
  params, extra = method.init(jax.random.key(0))
  widths = models.make_backbone(config.model, nnx.Rngs(0)).block_widths
  assert params["colour_head"]["layers"][0]["kernel"].shape == (1, 1, sum(widths[-3:]), 8)
  rgb = jax.random.uniform(jax.random.key(1), (2, config.data.image_size, config.data.image_size, 3))
  logits, features, _ = method.predict(params, extra, rgb, train=False)
  assert logits.shape == (2, 4, 4, len(method.bins))
  assert features.shape == (2, widths[-1])
  too_many = helpers.tiny_config(colorization_config.get_config("quick"), **{"colorization.hypercolumn_blocks": 99})
  with pytest.raises(UserError, match="hypercolumn_blocks is 99"):
    methods.make_method(too_many, num_classes=0)


@pytest.mark.parametrize("hidden", [0, 8])
def test_hypercolumn_head_equals_its_layers_on_the_concatenated_hypercolumn(hidden):
  """Projecting each block at its own resolution, then resizing, is the concatenation's result."""
  keys = jax.random.split(jax.random.key(2), 3)
  blocks = [jax.random.normal(keys[0], (2, 8, 8, 3)), jax.random.normal(keys[1], (2, 4, 4, 5)), jax.random.normal(keys[2], (2, 2, 2, 6))]
  head = colorization.HypercolumnHead((3, 5, 6), hidden, 7, nnx.Rngs(3))
  hypercolumn = jnp.concatenate([colorization.hypercolumn_at(block, 4) for block in blocks], axis=-1)
  concatenated = hypercolumn
  for layer in head.layers:
    concatenated = layer(concatenated)
  np.testing.assert_allclose(head(blocks, 4), concatenated, rtol=1e-5, atol=1e-5)
  assert head(blocks, 4).shape == (2, 4, 4, 7)


def test_the_input_is_the_heads_own_unless_the_config_names_one():
  """Zhang's head reads the lightness and Larsson's the mean of RGB; `colorization.input` swaps."""
  rgb = jax.random.uniform(jax.random.key(2), (2, 8, 8, 3))

  def fed(preset, **overrides):
    config = helpers.tiny_config(colorization_config.get_config(preset), **overrides)
    return np.asarray(methods.make_method(config, num_classes=0).network_input(rgb))

  lightness, grey = np.asarray(colorization.lightness_input(rgb)), np.asarray(colorization.grey_input(rgb))
  assert not np.allclose(lightness, grey, atol=1e-2)
  np.testing.assert_array_equal(fed("quick", **{"colorization.input": ""}), lightness)
  np.testing.assert_array_equal(fed("quick,larsson", **{"colorization.input": ""}), grey)
  np.testing.assert_array_equal(fed("quick"), grey)  # the scenes presets: see configs/colorization.py
  np.testing.assert_array_equal(fed("quick,larsson", **{"colorization.input": "lightness"}), lightness)
  with pytest.raises(UserError, match="colorization.input is 'rgb'"):
    fed("quick", **{"colorization.input": "rgb"})
