"""Tests for the on-device image augmentations in jaxssl.transforms.augment."""

import colorsys
import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.ndimage
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxssl.transforms import augment

RED = (1.0, 0.0, 0.0)
GREEN = (0.0, 1.0, 0.0)
BLUE = (0.0, 0.0, 1.0)

# Every stage switched off: the pipeline must be the identity.
IDENTITY_SPEC = augment.AugmentSpec(
    brightness=0.0,
    contrast=0.0,
    saturation=0.0,
    hue=0.0,
    jitter_prob=0.0,
    grayscale_prob=0.0,
    blur_prob=0.0,
    solarize_prob=0.0,
)

# Jitted entry points (augment_images is jitted itself): one compilation per shape keeps the
# file fast on small machines.
hue_jit = jax.jit(augment.adjust_hue)
blur_jit = jax.jit(augment.gaussian_blur, static_argnames="kernel_size")


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _sample_batch(rng, batch, spec, image_size):
  """Parameters of examples 0..batch-1, drawn exactly as `augment_images` does."""
  keys = jax.random.split(rng, batch)
  return jax.vmap(lambda k: augment.sample_augment_params(k, spec, image_size))(keys)


def _pixel(rgb):
  return jnp.asarray(rgb, jnp.float32).reshape(1, 1, 3)


def _random_uint8(seed, shape, low=0, high=256):
  return np.random.default_rng(seed).integers(low, high, size=shape, dtype=np.uint8)


def _is_gray(images, atol=1e-6):
  """[B, H, W, 3] -> [B] bool: all three channels equal everywhere."""
  spread = np.max(images, axis=-1) - np.min(images, axis=-1)
  return np.max(spread.reshape(images.shape[0], -1), axis=-1) <= atol


# ------------------------------------------------------------------ single ops


def test_brightness():
  img = jnp.array([[[0.2, 0.4, 1.0], [0.0, 0.6, 0.8]]])
  np.testing.assert_allclose(augment.adjust_brightness(img, 0.5), img * 0.5, atol=1e-7)
  np.testing.assert_allclose(augment.adjust_brightness(img, 1.0), img, atol=1e-7)
  # Values pushed above 1 are clipped.
  np.testing.assert_allclose(
      augment.adjust_brightness(img, 2.0), [[[0.4, 0.8, 1.0], [0.0, 1.0, 1.0]]], atol=1e-6
  )


def test_contrast():
  img = jnp.array([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], [[0.2, 0.4, 0.6], [1.0, 1.0, 1.0]]])
  lum = 0.2989 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]
  mean = float(jnp.mean(lum))
  np.testing.assert_allclose(augment.adjust_contrast(img, 0.0), np.full(img.shape, mean), atol=1e-6)
  np.testing.assert_allclose(augment.adjust_contrast(img, 1.0), img, atol=1e-6)
  expected = np.clip(mean + 1.5 * (np.asarray(img) - mean), 0.0, 1.0)
  np.testing.assert_allclose(augment.adjust_contrast(img, 1.5), expected, atol=1e-6)


def test_saturation():
  img = jnp.array([[[0.9, 0.2, 0.1], [0.3, 0.5, 0.7]]])
  gray = augment.to_grayscale(img)
  np.testing.assert_allclose(augment.adjust_saturation(img, 0.0), gray, atol=1e-6)
  np.testing.assert_allclose(augment.adjust_saturation(img, 1.0), img, atol=1e-6)
  expected = np.clip(2.0 * np.asarray(img) - np.asarray(gray), 0.0, 1.0)
  np.testing.assert_allclose(augment.adjust_saturation(img, 2.0), expected, atol=1e-6)


def test_grayscale_weights():
  # torchvision's rgb_to_grayscale weights (PIL rounds the red one to 0.299).
  img = jnp.array([[RED, GREEN, BLUE, (0.5, 0.5, 0.5)]])
  out = augment.to_grayscale(img)
  assert out.shape == img.shape
  expected = np.array([0.2989, 0.587, 0.114, 0.5 * 0.9999])[None, :, None] * np.ones((1, 4, 3))
  np.testing.assert_allclose(out, expected, atol=1e-6)


def test_hue_primaries():
  red = _pixel(RED)
  np.testing.assert_allclose(hue_jit(red, 1.0 / 3.0), _pixel(GREEN), atol=1e-6)
  np.testing.assert_allclose(hue_jit(red, 2.0 / 3.0), _pixel(BLUE), atol=1e-6)
  np.testing.assert_allclose(hue_jit(red, -1.0 / 3.0), _pixel(BLUE), atol=1e-6)
  np.testing.assert_allclose(hue_jit(_pixel(GREEN), 1.0 / 3.0), _pixel(BLUE), atol=1e-6)
  # Half a turn gives the complementary colour.
  np.testing.assert_allclose(hue_jit(red, 0.5), _pixel((0.0, 1.0, 1.0)), atol=1e-6)
  # Saturation and value are kept: a dark, desaturated red stays as dark and desaturated.
  out = hue_jit(_pixel((0.6, 0.3, 0.3)), 1.0 / 3.0)
  np.testing.assert_allclose(out, _pixel((0.3, 0.6, 0.3)), atol=1e-6)


def test_hue_identity():
  img = jnp.asarray(_random_uint8(0, (4, 4, 3)), jnp.float32) / 255.0
  np.testing.assert_allclose(hue_jit(img, 0.0), img, atol=1e-6)
  np.testing.assert_allclose(hue_jit(img, 1.0), img, atol=1e-5)
  # Gray pixels have no hue to rotate.
  gray = jnp.full((4, 4, 3), 0.4)
  np.testing.assert_allclose(hue_jit(gray, 0.25), gray, atol=1e-6)


def test_hue_matches_colorsys():
  # Python's colorsys is an independent definition of the HSV round trip.
  img = np.asarray(_random_uint8(1, (6, 6, 3)), np.float32) / 255.0
  for delta in (0.1, 0.45, -0.3):
    expected = [colorsys.hsv_to_rgb((h + delta) % 1.0, s, v)
                for h, s, v in (colorsys.rgb_to_hsv(*pixel) for pixel in img.reshape(-1, 3))]
    np.testing.assert_allclose(hue_jit(img, delta), np.reshape(expected, img.shape), atol=1e-5)


def test_solarize():
  img = jnp.array([0.0, 0.2, 0.49, 0.5, 0.8, 1.0])
  np.testing.assert_allclose(augment.solarize(img, 0.5), [0.0, 0.2, 0.49, 0.5, 0.2, 0.0], atol=1e-6)
  np.testing.assert_allclose(augment.solarize(img, 0.9), [0.0, 0.2, 0.49, 0.5, 0.8, 0.0], atol=1e-6)


def test_blur_kernel_size():
  assert augment.blur_kernel_size(224, 0.1) == 23  # BYOL's kernel.
  assert augment.blur_kernel_size(64, 0.1) == 7
  assert augment.blur_kernel_size(32, 0.1) == 3
  assert augment.blur_kernel_size(16, 0.1) == 3
  assert augment.blur_kernel_size(4, 0.1) == 3
  assert augment.blur_kernel_size(96, 0.1) == 11
  assert augment.blur_sigma_range(augment.AugmentSpec(), 224) == pytest.approx((0.1, 2.0))
  assert augment.blur_sigma_range(augment.AugmentSpec(), 112) == pytest.approx((0.05, 1.0))


def test_blur_constant_image_unchanged():
  img = jnp.full((9, 9, 3), 0.3)
  for sigma in (0.1, 1.0, 5.0):
    np.testing.assert_allclose(blur_jit(img, sigma, 5), img, atol=1e-6)


def test_blur_delta():
  img = jnp.zeros((9, 9, 3)).at[4, 4, :].set(1.0)
  out = np.asarray(blur_jit(img, 1.0, 5))
  np.testing.assert_allclose(out.sum(axis=(0, 1)), [1.0, 1.0, 1.0], atol=1e-6)
  # Symmetric under flips and transposition, peaked in the centre, zero outside the kernel.
  np.testing.assert_allclose(out, out[::-1], atol=1e-7)
  np.testing.assert_allclose(out, out[:, ::-1], atol=1e-7)
  np.testing.assert_allclose(out, out.transpose(1, 0, 2), atol=1e-7)
  assert out[4, 4, 0] == out.max()
  assert np.all(out[:2] == 0) and np.all(out[:, 7:] == 0)
  # Separable Gaussian: the response is the outer product of the 1-D kernel with itself.
  k = np.exp(-0.5 * np.arange(-2, 3) ** 2)
  k /= k.sum()
  np.testing.assert_allclose(out[2:7, 2:7, 0], np.outer(k, k), atol=1e-6)
  # A tiny sigma leaves the image (almost) unchanged.
  np.testing.assert_allclose(blur_jit(img, 1e-3, 5), img, atol=1e-6)


def test_blur_reflects_borders_like_torchvision():
  # torchvision pads by reflection without repeating the edge: scipy's "mirror" mode.
  img = np.asarray(_random_uint8(2, (10, 12, 3)), np.float32) / 255.0
  sigma, size = 1.3, 5
  kernel = np.exp(-0.5 * (np.arange(-2, 3) / sigma) ** 2)
  kernel /= kernel.sum()
  expected = scipy.ndimage.correlate1d(scipy.ndimage.correlate1d(img, kernel, axis=0, mode="mirror"), kernel, axis=1, mode="mirror")
  np.testing.assert_allclose(blur_jit(img, sigma, size), expected, atol=1e-6)


def test_blur_rejects_even_kernel():
  with pytest.raises(ValueError):
    augment.gaussian_blur(jnp.zeros((4, 4, 3)), 1.0, 4)


def test_normalize():
  images = jnp.array([[[[0.485, 0.456, 0.406], [1.0, 1.0, 1.0]]]])
  out = augment.normalize(images)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out[0, 0, 0], [0.0, 0.0, 0.0], atol=1e-6)
  expected = (1.0 - np.array(augment.IMAGENET_MEAN)) / np.array(augment.IMAGENET_STD)
  np.testing.assert_allclose(out[0, 0, 1], expected, atol=1e-5)
  u8 = jnp.full((1, 1, 1, 3), 255, jnp.uint8)
  np.testing.assert_allclose(augment.normalize(u8, mean=0.5, std=0.5), np.ones((1, 1, 1, 3)), atol=1e-6)


# ---------------------------------------------------------------- spec/config


def test_spec_is_hashable_and_validated():
  spec = augment.AugmentSpec(blur_sigma=[0.1, 2.0])
  assert isinstance(spec.blur_sigma, tuple)
  assert hash(spec) == hash(augment.AugmentSpec())
  assert spec == augment.AugmentSpec()
  with pytest.raises(ValueError):
    augment.AugmentSpec(jitter_prob=1.5)
  with pytest.raises(ValueError):
    augment.AugmentSpec(hue=0.7)
  with pytest.raises(ValueError):
    augment.AugmentSpec(blur_sigma=(2.0, 0.1))


def test_byol_view_specs():
  v1, v2 = augment.BYOL_VIEW_SPECS
  assert (v1.blur_prob, v2.blur_prob) == (1.0, 0.1)
  assert (v1.solarize_prob, v2.solarize_prob) == (0.0, 0.2)
  for v in (v1, v2):
    assert (v.brightness, v.contrast, v.saturation, v.hue) == (0.4, 0.4, 0.2, 0.1)
    assert (v.jitter_prob, v.grayscale_prob) == (0.8, 0.2)
    assert v.blur_sigma == (0.1, 2.0)
    assert v.solarize_threshold == 0.5


def test_spec_from_config():
  cfg = ml_collections.ConfigDict(
      {"blur_prob": 0.1, "solarize_prob": 0.2, "blur_sigma": [0.2, 1.0], "crop_size": 32}
  )
  spec = augment.spec_from_config(cfg)
  assert spec == augment.AugmentSpec(blur_prob=0.1, solarize_prob=0.2, blur_sigma=(0.2, 1.0))
  assert spec.brightness == 0.4  # Missing fields keep their defaults.
  assert augment.spec_from_config(ml_collections.ConfigDict()) == augment.AugmentSpec()
  hash(spec)


# ------------------------------------------------------------------- pipeline


def test_augment_images_output():
  images = _random_uint8(1, (16, 8, 8, 3))
  spec = augment.BYOL_VIEW_SPECS[1]
  out = augment.augment_images(jax.random.key(0), images, spec=spec)
  assert out.shape == images.shape
  assert out.dtype == jnp.float32
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  # Same key, same output; a different key, a different output.
  np.testing.assert_array_equal(augment.augment_images(jax.random.key(0), images, spec=spec), out)
  assert not np.allclose(augment.augment_images(jax.random.key(1), images, spec=spec), out)
  # Raw uint32 keys work too and give the same result as typed keys with the same seed.
  np.testing.assert_array_equal(augment.augment_images(jax.random.PRNGKey(0), images, spec=spec), out)


def test_examples_get_different_augmentations():
  images = np.repeat(_random_uint8(2, (1, 8, 8, 3)), 16, axis=0)
  spec = augment.BYOL_VIEW_SPECS[1]
  rng = jax.random.key(3)
  out = np.asarray(augment.augment_images(rng, images, spec=spec)).reshape(16, -1)
  # Example i is augmented with the i-th key of split(rng, batch).
  params = _sample_batch(rng, 16, spec, 8)
  jittered = np.flatnonzero(np.asarray(params.apply_jitter))
  assert len(jittered) >= 8
  # Every colour-jittered copy of the same image comes out different.
  for a, i in enumerate(jittered):
    for j in jittered[a + 1 :]:
      assert not np.allclose(out[i], out[j]), (i, j)
  unchanged = np.all(np.isclose(out, images.reshape(16, -1) / 255.0, atol=1e-6), axis=1)
  assert not np.any(unchanged[jittered])


def test_identity_spec():
  images = _random_uint8(4, (16, 8, 8, 3))
  expected = images.astype(np.float32) / 255.0
  out = augment.augment_images(jax.random.key(0), images, spec=IDENTITY_SPEC)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, expected, atol=1e-7)
  # Float input in [0, 1] is taken as is.
  out = augment.augment_images(jax.random.key(0), expected, spec=IDENTITY_SPEC)
  np.testing.assert_allclose(out, expected, atol=1e-7)
  # Probability 1 with zero strengths is the identity too (nothing to jitter).
  spec = dataclasses.replace(IDENTITY_SPEC, jitter_prob=1.0)
  np.testing.assert_allclose(augment.augment_images(jax.random.key(0), images, spec), expected, atol=1e-7)


def test_apply_params_follows_order():
  """The jitter is applied in the sampled order, then grayscale, blur and solarize."""
  apply_jit = jax.jit(augment.apply_augment_params, static_argnames="spec")
  img = jnp.asarray(_random_uint8(5, (8, 8, 3)), jnp.float32) / 255.0
  spec = augment.AugmentSpec(solarize_prob=0.5, solarize_threshold=0.6)
  base = augment.sample_augment_params(jax.random.key(0), spec, 8)
  factors = {"brightness": 1.3, "contrast": 0.7, "saturation": 1.2, "hue": 0.08}
  ops = [  # Indexed by augment.BRIGHTNESS, CONTRAST, SATURATION, HUE.
      lambda x: augment.adjust_brightness(x, factors["brightness"]),
      lambda x: augment.adjust_contrast(x, factors["contrast"]),
      lambda x: augment.adjust_saturation(x, factors["saturation"]),
      lambda x: hue_jit(x, factors["hue"]),
  ]
  outputs = []
  for order in ([0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]):
    params = base._replace(
        apply_jitter=jnp.array(True),
        jitter_order=jnp.array(order, jnp.int32),
        apply_grayscale=jnp.array(False),
        apply_blur=jnp.array(True),
        blur_sigma=jnp.float32(0.8),
        apply_solarize=jnp.array(True),
        **{name: jnp.float32(value) for name, value in factors.items()},
    )
    expected = img
    for i in order:
      expected = ops[i](expected)
    expected = blur_jit(expected, 0.8, 3)
    expected = augment.solarize(expected, 0.6)
    out = apply_jit(img, params, spec=spec)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    outputs.append(out)
  assert not np.allclose(outputs[0], outputs[1])


def test_sampled_params():
  spec = augment.AugmentSpec(brightness=0.5, contrast=0.3, saturation=0.2, hue=0.1)
  params = _sample_batch(jax.random.key(0), 256, spec, 112)
  orders = np.asarray(params.jitter_order)
  assert orders.shape == (256, 4)
  assert np.all(np.sort(orders, axis=1) == np.arange(4))
  assert len({tuple(o) for o in orders}) > 12  # Many of the 24 orders occur.
  ranges = {
      "brightness": (0.5, 1.5),
      "contrast": (0.7, 1.3),
      "saturation": (0.8, 1.2),
      "hue": (-0.1, 0.1),
      "blur_sigma": (0.05, 1.0),  # (0.1, 2.0) at 224 px, halved at 112 px.
  }
  for name, (lo, hi) in ranges.items():
    values = np.asarray(getattr(params, name))
    assert values.min() >= lo and values.max() <= hi, name
    assert values.min() < lo + 0.1 * (hi - lo) and values.max() > hi - 0.1 * (hi - lo), name


# ------------------------------------------------------------------- sharding


@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto])
def test_sharding_invariance(axis_type):
  n = len(jax.devices())  # 8 with the suite's conftest; works with any count.
  batch = max(16 // n, 1) * n
  images = _random_uint8(6, (batch, 8, 8, 3))
  spec = augment.BYOL_VIEW_SPECS[1]
  rng = jax.random.key(7)
  single = augment.augment_images(rng, images, spec=spec)

  mesh = jax.make_mesh((n,), ("data",), axis_types=(axis_type,))
  data = NamedSharding(mesh, P("data"))
  sharded_fn = jax.jit(
      functools.partial(augment.augment_images, spec=spec),
      in_shardings=(NamedSharding(mesh, P()), data),
      out_shardings=data,
  )
  sharded = sharded_fn(rng, jax.device_put(images, data))
  assert sharded.sharding.is_equivalent_to(data, 4)
  np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), atol=1e-6)


# ---------------------------------------------------------------- statistics


def test_byol_probabilities_of_sampled_params():
  expected = [
      dict(apply_jitter=0.8, apply_grayscale=0.2, apply_blur=1.0, apply_solarize=0.0),
      dict(apply_jitter=0.8, apply_grayscale=0.2, apply_blur=0.1, apply_solarize=0.2),
  ]
  for spec, probs in zip(augment.BYOL_VIEW_SPECS, expected):
    params = _sample_batch(jax.random.key(11), 4096, spec, 224)
    for name, p in probs.items():
      assert np.mean(np.asarray(getattr(params, name))) == pytest.approx(p, abs=0.03), (spec, name)


def test_byol_grayscale_and_solarize_fractions():
  """End to end on 512 tiny images with BYOL's second view: grayscale ~ 0.2, solarize ~ 0.2."""
  spec = augment.BYOL_VIEW_SPECS[1]
  # Coloured images in the middle of the range, so jitter never saturates a whole image to gray.
  colour = _random_uint8(8, (512, 4, 4, 3), low=40, high=180)
  out = np.asarray(augment.augment_images(jax.random.key(9), colour, spec=spec))
  gray = _is_gray(out)
  assert np.mean(gray) == pytest.approx(spec.grayscale_prob, abs=0.06)
  # And exactly the examples whose sampled decision says so.
  params = _sample_batch(jax.random.key(9), 512, spec, 4)
  np.testing.assert_array_equal(gray, np.asarray(params.apply_grayscale))

  # Bright, weakly coloured images stay above the 0.5 threshold through jitter (brightness
  # >= 0.6), grayscale and blur, so solarized images are exactly those whose values fall below 0.5.
  bright = _random_uint8(10, (512, 4, 4, 3), low=235, high=256)
  out = np.asarray(augment.augment_images(jax.random.key(12), bright, spec=spec))
  low = out.reshape(512, -1) < 0.5
  # Every image is either entirely solarized or not at all.
  assert np.all(low.all(axis=1) | ~low.any(axis=1))
  solarized = low.all(axis=1)
  assert np.mean(solarized) == pytest.approx(spec.solarize_prob, abs=0.06)
  params = _sample_batch(jax.random.key(12), 512, spec, 4)
  np.testing.assert_array_equal(solarized, np.asarray(params.apply_solarize))
