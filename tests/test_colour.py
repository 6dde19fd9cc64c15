"""Lab colour and its quantisation for colorization (jaxssl.transforms.colour)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl.transforms import colour

# Published CIE Lab (D65) values of the sRGB primaries and white.
_REFERENCE = {
    (1.0, 1.0, 1.0): (100.0, 0.0, 0.0),
    (1.0, 0.0, 0.0): (53.24, 80.09, 67.20),
    (0.0, 1.0, 0.0): (87.73, -86.18, 83.18),
    (0.0, 0.0, 1.0): (32.30, 79.19, -107.86),
    (0.0, 0.0, 0.0): (0.0, 0.0, 0.0),
}


def test_lab_of_the_primaries_and_the_round_trip():
  rgb = jnp.asarray(list(_REFERENCE), jnp.float32)
  np.testing.assert_allclose(colour.srgb_to_lab(rgb), list(_REFERENCE.values()), atol=0.02)
  images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
  np.testing.assert_allclose(colour.lab_to_srgb(colour.srgb_to_lab(images)), images, atol=1e-3)


def test_gamut_bins_follow_their_stated_rule():
  bins = colour.gamut_ab_bins()
  assert bins.shape == (261, 2)
  assert np.all(bins % 10 == 0)
  # The rule, recomputed another way: the grid cells that sampled sRGB colours fall into.
  values = np.linspace(0.0, 1.0, 64)
  r, g, b = np.meshgrid(values, values, values, indexing="ij")
  ab = np.asarray(colour.srgb_to_lab(jnp.asarray(np.stack([r, g, b], -1).reshape(-1, 3), jnp.float32)))[:, 1:]
  reached = {tuple(cell) for cell in (10 * np.round(ab / 10)).astype(int)}
  assert {tuple(cell) for cell in bins.astype(int)} == reached
  # Every bin is in gamut: some sRGB colour lies within its cell.
  for centre in bins[::17]:
    inside = np.all(np.abs(ab - centre) <= 5.0, axis=1)
    assert inside.any(), centre


def test_soft_encoding_spreads_one_over_the_nearest_bins():
  bins = jnp.asarray(colour.gamut_ab_bins())
  ab = jnp.asarray([[3.0, -7.0], [40.0, 22.0], [0.0, 0.0]])
  for neighbours in (5, 10):
    targets = np.asarray(colour.soft_encode(ab, bins, neighbours=neighbours, sigma=5.0))
    np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
    assert np.all((targets > 0).sum(-1) == neighbours)
  # The nearest bin gets the most weight.
  nearest = np.argmin(np.sum((np.asarray(ab)[:, None] - np.asarray(bins)) ** 2, -1), axis=1)
  assert np.all(targets.argmax(-1) == nearest)


def test_sparse_soft_encoding_is_the_gaussian_over_the_nearest_bins_by_hand():
  bins = jnp.asarray(colour.gamut_ab_bins())
  ab = np.array([3.0, -7.0], np.float32)
  indices, weights = colour.nearest_bins(jnp.asarray(ab), bins, neighbours=5, sigma=5.0)
  squared = np.sum((np.asarray(bins) - ab) ** 2, axis=-1)
  expected_indices = np.argsort(squared, kind="stable")[:5]
  np.testing.assert_array_equal(np.asarray(indices), expected_indices)
  gaussian = np.exp(-squared[expected_indices] / (2 * 5.0**2))
  np.testing.assert_allclose(np.asarray(weights), gaussian / gaussian.sum(), rtol=1e-5)
  dense = np.zeros(len(bins), np.float32)
  dense[expected_indices] = gaussian / gaussian.sum()
  np.testing.assert_allclose(colour.soft_encode(jnp.asarray(ab), bins, neighbours=5, sigma=5.0), dense, rtol=1e-5, atol=1e-7)


def test_rebalancing_weights_have_expectation_one_and_favour_rare_bins():
  prior = jnp.asarray([0.7, 0.2, 0.09, 0.01])
  weights = np.asarray(colour.rebalancing_weights(prior, mix=0.5))
  assert np.sum(np.asarray(prior) * weights) == pytest.approx(1.0, rel=1e-6)
  assert np.all(np.diff(weights) > 0)
  # mix = 1: uniform weights (no rebalancing effect beyond the normalisation).
  np.testing.assert_allclose(colour.rebalancing_weights(prior, mix=1.0), 1.0, rtol=1e-6)


def test_smoothed_prior_spreads_mass_to_neighbouring_bins():
  bins = jnp.asarray([[0.0, 0.0], [10.0, 0.0], [60.0, 60.0]])
  prior = jnp.asarray([1.0, 0.0, 0.0])
  # A bin 10 ab units away gets exp(-10^2 / (2 * 5^2)) of the mass; one 85 away next to nothing.
  expected = np.array([1.0, np.exp(-2.0), np.exp(-72.0)]) / (1.0 + np.exp(-2.0) + np.exp(-72.0))
  np.testing.assert_allclose(colour.smooth_prior(prior, bins, sigma=5.0), expected, rtol=1e-5, atol=1e-12)
  np.testing.assert_array_equal(colour.smooth_prior(prior, bins, sigma=0.0), prior)


def test_empirical_prior_counts_nearest_bins():
  bins = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], np.float32)
  pixels = np.array([[1.0, 1.0], [9.0, 1.0], [8.0, -2.0], [0.0, 30.0]], np.float32)
  np.testing.assert_allclose(colour.empirical_prior(pixels, bins), [0.25, 0.5, 0.25])


def test_annealed_mean_is_the_mean_at_temperature_one_and_the_mode_when_cold():
  bins = jnp.asarray([[0.0, 0.0], [10.0, 0.0], [0.0, 20.0]])
  logits = jnp.log(jnp.asarray([0.2, 0.5, 0.3]))
  np.testing.assert_allclose(colour.annealed_mean(logits, bins, temperature=1.0), [5.0, 6.0], atol=1e-5)
  np.testing.assert_allclose(colour.annealed_mean(logits, bins, temperature=0.01), [10.0, 0.0], atol=1e-3)
