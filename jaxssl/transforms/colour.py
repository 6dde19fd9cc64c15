"""CIE Lab colour and its quantisation, for colorization (Zhang, Isola, Efros 2016).

dm-pix has no Lab conversion, so sRGB <-> Lab is written here (D65 white point, the sRGB
transfer curve, CIE 1976 L*a*b*), as pure JAX functions for inside the jitted step.

Colorization predicts a distribution over quantised ab values. The paper's 313 bins are the
10-unit ab grid cells its ImageNet images fall into; they cannot be re-derived from the sRGB
gamut by a simple rule, so this module derives its own set with a stated rule (`gamut_ab_bins`:
every cell of the 10-unit grid that some sRGB colour falls into; 261 cells) and accepts any
other set, e.g. the paper's, as an array (`config.colorization.bins_file`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# D65 reference white in XYZ (the sRGB white point), and sRGB's linear RGB -> XYZ matrix.
D65_WHITE = (0.95047, 1.0, 1.08883)
_RGB_TO_XYZ = np.array([
    [0.4124564, 0.3575761, 0.1804375],
    [0.2126729, 0.7151522, 0.0721750],
    [0.0193339, 0.1191920, 0.9503041],
], np.float32)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ.astype(np.float64)).astype(np.float32)
_EPSILON = (6.0 / 29.0) ** 3  # where CIE's f(t) switches from the cube root to its linear part


def _srgb_to_linear(c):
  return jnp.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c):
  c = jnp.clip(c, 0.0, None)
  return jnp.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1.0 / 2.4) - 0.055)


def _f(t):
  return jnp.where(t > _EPSILON, jnp.cbrt(t), t / (3.0 * (6.0 / 29.0) ** 2) + 4.0 / 29.0)


def _f_inverse(t):
  return jnp.where(t > 6.0 / 29.0, t**3, 3.0 * (6.0 / 29.0) ** 2 * (t - 4.0 / 29.0))


def srgb_to_lab(rgb: jax.Array) -> jax.Array:
  """sRGB in [0, 1] [..., 3] -> CIE Lab [..., 3] (L in [0, 100], a and b about [-110, 110])."""
  xyz = _srgb_to_linear(rgb) @ jnp.asarray(_RGB_TO_XYZ.T) / jnp.asarray(D65_WHITE)
  fx, fy, fz = _f(xyz[..., 0]), _f(xyz[..., 1]), _f(xyz[..., 2])
  return jnp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def lab_to_srgb(lab: jax.Array) -> jax.Array:
  """CIE Lab [..., 3] -> sRGB [..., 3], clipped to [0, 1] (Lab holds colours sRGB cannot show)."""
  fy = (lab[..., 0] + 16.0) / 116.0
  fx, fz = fy + lab[..., 1] / 500.0, fy - lab[..., 2] / 200.0
  xyz = jnp.stack([_f_inverse(fx), _f_inverse(fy), _f_inverse(fz)], axis=-1) * jnp.asarray(D65_WHITE)
  return jnp.clip(_linear_to_srgb(xyz @ jnp.asarray(_XYZ_TO_RGB.T)), 0.0, 1.0)


@functools.lru_cache(maxsize=4)
def gamut_ab_bins(grid: int = 10, levels: int = 64) -> np.ndarray:
  """The quantised ab values colorization predicts: the centres (multiples of `grid`) of every
  `grid`-unit ab cell that at least one sRGB colour falls into, the sRGB cube sampled at
  `levels` values per channel. [Q, 2] float32, sorted by (a, b); Q = 261 for the defaults (the
  paper's 313 also hold cells its data reached just outside this set)."""
  values = np.linspace(0.0, 1.0, levels, dtype=np.float32)
  cube = np.stack(np.meshgrid(values, values, values, indexing="ij"), axis=-1).reshape(-1, 3)
  ab = np.asarray(srgb_to_lab(jnp.asarray(cube)))[:, 1:]
  cells = np.unique(np.round(ab / grid).astype(np.int64), axis=0)
  return (cells * grid).astype(np.float32)


def nearest_bins(ab: jax.Array, bins: jax.Array, neighbours: int = 10, sigma: float = 5.0) -> tuple[jax.Array, jax.Array]:
  """The soft encoding in sparse form: (indices [..., neighbours] of the nearest bins, nearest
  first; their weights, a Gaussian of std `sigma` of the distance, summing to 1). A loss reads its
  log-probabilities at these indices, which costs a fraction of a dense [..., Q] target."""
  squared = jnp.sum(jnp.square(ab[..., None, :] - bins), axis=-1)  # [..., Q]
  negated, nearest = jax.lax.top_k(-squared, neighbours)
  weights = jax.nn.softmax(negated / (2.0 * sigma**2), axis=-1)  # exp(-d^2 / 2 sigma^2), normalised
  return nearest, weights


def soft_encode(ab: jax.Array, bins: jax.Array, neighbours: int = 10, sigma: float = 5.0) -> jax.Array:
  """Soft targets [..., Q]: a Gaussian (std `sigma`) of the distance to each of the `neighbours`
  nearest bins, normalised to sum to 1; 0 elsewhere (paper: 5 neighbours; official code: 10)."""
  nearest, weights = nearest_bins(ab, bins, neighbours, sigma)
  one_hot = jax.nn.one_hot(nearest, bins.shape[0], dtype=weights.dtype)  # [..., neighbours, Q]
  return jnp.einsum("...n,...nq->...q", weights, one_hot)


def empirical_prior(ab_pixels: np.ndarray, bins: np.ndarray) -> np.ndarray:
  """The fraction of `ab_pixels` [N, 2] whose nearest bin is each bin: [Q], summing to 1."""
  nearest = np.argmin(((ab_pixels[:, None, :] - bins[None]) ** 2).sum(-1), axis=1)
  counts = np.bincount(nearest, minlength=len(bins)).astype(np.float64)
  return (counts / counts.sum()).astype(np.float32)


def smooth_prior(prior: jax.Array, bins: jax.Array, sigma: float = 5.0) -> jax.Array:
  """The paper's p-tilde: the empirical prior [Q] over the ab bins [Q, 2] convolved with a
  Gaussian of std `sigma` ab units (paper: 5) and renormalised over the bins, so that a rare
  colour next to a common one is not weighted as if it were unseen. `sigma` 0 leaves it as is."""
  if sigma <= 0:
    return prior
  squared = jnp.sum(jnp.square(bins[:, None, :] - bins[None, :, :]), axis=-1)
  smoothed = jnp.exp(-squared / (2.0 * sigma**2)) @ prior
  return smoothed / jnp.sum(smoothed)


def rebalancing_weights(prior: jax.Array, mix: float = 0.5) -> jax.Array:
  """Class rebalancing: w proportional to ((1 - mix) p + mix / Q)^-1, scaled so that E_p[w] = 1
  (paper: lambda = 0.5), so rare colours are not drowned by the grey and brown of most pixels."""
  weights = 1.0 / ((1.0 - mix) * prior + mix / prior.shape[-1])
  return weights / jnp.sum(prior * weights)


def annealed_mean(logits: jax.Array, bins: jax.Array, temperature: float = 0.38) -> jax.Array:
  """Decodes predicted distributions [..., Q] into ab [..., 2]: the mean of softmax(logits / T)
  over the bins. T = 1 is the mean, T -> 0 the mode; the paper's 0.38 keeps the mean's spatial
  coherence and most of the mode's vividness."""
  return jax.nn.softmax(logits / temperature, axis=-1) @ bins
