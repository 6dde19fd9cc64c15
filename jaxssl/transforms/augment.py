"""On-device image augmentation for self-supervised pretraining.

Everything here is a pure JAX function meant to run inside a jitted train
step on fixed-size crops (random cropping and flipping are not part of this
module). A batch is augmented with one PRNG key per example:

  keys = jax.random.split(rng, batch_size)
  out = jax.vmap(per_example_augment)(keys, images)

so example ``i`` always sees key ``i`` whatever the batch's sharding is, and the
augmented batch is identical on one device or split over many (as long as every
device is given the same ``rng``).

The pipeline follows the BYOL paper (Grill et al., 2020, appendix B), which
itself follows torchvision:

  1. colour jitter with probability ``jitter_prob``: brightness, contrast,
     saturation and hue adjustments applied in a random order drawn per example;
  2. conversion to grayscale with probability ``grayscale_prob``;
  3. Gaussian blur with probability ``blur_prob``;
  4. solarization with probability ``solarize_prob``.

Pixel values are float32 in [0, 1] throughout and are clipped to [0, 1] after
every operation.

Blur scaling. BYOL draws the blur's standard deviation from [0.1, 2.0] pixels
with a 23-pixel kernel on 224-pixel crops. Applied unchanged to, e.g., 32-pixel
crops this would wipe out most of the image, so both are expressed relative to
the image size: the sigma range is multiplied by ``image_size / 224`` and the
kernel size is ``odd(round(blur_kernel_fraction * image_size))`` (at least 3),
where ``image_size = min(height, width)``. At 224 pixels this is exactly the
paper's setting. The kernel size depends only on the (static) image shape, so
the augmentation compiles once per input shape.

Grayscale, the hue rotation (through dm-pix's HSV conversions) and
solarisation are dm-pix's; brightness, contrast, saturation and the blur are
written here, each saying why (dm-pix follows tf.image's definitions of the
first three, not torchvision's).

Decisions for each example (apply jitter or not, which order, factors, ...) are
drawn by :func:`sample_augment_params` and applied by
:func:`apply_augment_params`; :func:`augment_images` does both for a batch.
Operations that are statically disabled (probability 0 or strength 0) are left
out of the compiled computation, without changing the random draws of the
others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from typing import Any, NamedTuple

import dm_pix as pix
import jax
import jax.numpy as jnp
import ml_collections

# Per-channel statistics of ImageNet, for inputs in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Image size at which `AugmentSpec.blur_sigma` is expressed (BYOL's crop size).
BLUR_REFERENCE_SIZE = 224

# Indices of the colour-jitter operations in `AugmentParams.jitter_order`.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3
NUM_JITTER_OPS = 4


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
  """Static description of one view's augmentation (hashable, jit-static).

  Attributes:
    brightness: Brightness factor drawn from U[max(0, 1 - b), 1 + b].
    contrast: Contrast factor drawn from U[max(0, 1 - c), 1 + c].
    saturation: Saturation factor drawn from U[max(0, 1 - s), 1 + s].
    hue: Hue rotation drawn from U[-h, h], as a fraction of a full turn;
      must be in [0, 0.5].
    jitter_prob: Probability of applying the colour jitter (all four
      operations, in a random order).
    grayscale_prob: Probability of converting to grayscale.
    blur_prob: Probability of applying a Gaussian blur.
    blur_sigma: (min, max) standard deviation of the blur, in pixels of a
      224-pixel image; scaled by ``image_size / 224`` for other sizes.
    blur_kernel_fraction: Blur kernel size as a fraction of the image size;
      rounded to an odd integer of at least 3.
    solarize_prob: Probability of solarizing.
    solarize_threshold: Pixels at or above this value are inverted.
  """

  brightness: float = 0.4
  contrast: float = 0.4
  saturation: float = 0.2
  hue: float = 0.1
  jitter_prob: float = 0.8
  grayscale_prob: float = 0.2
  blur_prob: float = 1.0
  blur_sigma: tuple[float, float] = (0.1, 2.0)
  blur_kernel_fraction: float = 0.1
  solarize_prob: float = 0.0
  solarize_threshold: float = 0.5

  def __post_init__(self):
    # Store plain floats, and a tuple for blur_sigma even when given a list
    # (e.g. from a config file), so the spec stays hashable and can be a
    # static argument of `jax.jit`.
    if len(self.blur_sigma) != 2:
      raise ValueError(f"blur_sigma must be (min, max), got {self.blur_sigma}")
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if field.name == "blur_sigma":
        value = tuple(float(s) for s in value)
      else:
        value = float(value)
      object.__setattr__(self, field.name, value)
    for name in ("brightness", "contrast", "saturation"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
    if not 0.0 <= self.hue <= 0.5:
      raise ValueError(f"hue must be in [0, 0.5], got {self.hue}")
    for name in ("jitter_prob", "grayscale_prob", "blur_prob",
                 "solarize_prob"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
    lo, hi = self.blur_sigma
    if not 0.0 <= lo <= hi:
      raise ValueError(f"blur_sigma must satisfy 0 <= min <= max, got "
                       f"{self.blur_sigma}")
    if self.blur_kernel_fraction <= 0:
      raise ValueError("blur_kernel_fraction must be > 0, got "
                       f"{self.blur_kernel_fraction}")


# The asymmetric pair of views from the BYOL paper (appendix B): the first view
# is always blurred and never solarized, the second is rarely blurred and
# sometimes solarized.
BYOL_VIEW_SPECS: tuple[AugmentSpec, AugmentSpec] = (
    AugmentSpec(blur_prob=1.0, solarize_prob=0.0),
    AugmentSpec(blur_prob=0.1, solarize_prob=0.2),
)


def spec_from_config(cfg: ml_collections.ConfigDict) -> AugmentSpec:
  """Builds an `AugmentSpec` from a config with the same field names.

  Fields missing from ``cfg`` (or set to None) keep their defaults; keys of
  ``cfg`` that are not fields of `AugmentSpec` (e.g. crop settings) are
  ignored.

  Args:
    cfg: A ConfigDict (or any mapping) of augmentation settings.

  Returns:
    The corresponding spec.
  """
  values = dict(cfg.items())
  kwargs = {
      field.name: values[field.name]
      for field in dataclasses.fields(AugmentSpec)
      if values.get(field.name) is not None
  }
  return AugmentSpec(**kwargs)


# ----------------------------------------------------------------------------
# Individual operations on one float32 image [H, W, 3] with values in [0, 1].
# ----------------------------------------------------------------------------


def _clip(img: jax.Array) -> jax.Array:
  return jnp.clip(img, 0.0, 1.0)


def _blend(img1: jax.Array, img2: jax.Array, ratio) -> jax.Array:
  """ratio * img1 + (1 - ratio) * img2, clipped to [0, 1]."""
  return _clip(ratio * img1 + (1.0 - ratio) * img2)


def luminance(img: jax.Array) -> jax.Array:
  """ITU-R 601 luma of an RGB image, with torchvision's weights (0.2989, 0.587, 0.114): [..., 3] -> [...]."""
  return pix.rgb_to_grayscale(img, luma_standard="rec601")[..., 0]


def to_grayscale(img: jax.Array) -> jax.Array:
  """Converts RGB to grayscale, replicated over the three channels.

  Args:
    img: [..., 3] RGB values in [0, 1].

  Returns:
    [..., 3] where every channel equals 0.2989 R + 0.587 G + 0.114 B.
  """
  return pix.rgb_to_grayscale(img, keep_dims=True, luma_standard="rec601")


# Brightness, contrast and saturation stay hand-written: dm-pix implements tf.image's
# definitions (an additive brightness shift, contrast about each channel's own mean, saturation
# scaled in HSV), while BYOL's paper and torchvision, which this pipeline follows, multiply the
# brightness, take the contrast about the mean luminance and blend with the grayscale image.


def adjust_brightness(img: jax.Array, factor) -> jax.Array:
  """Multiplies all values by ``factor`` (0 gives black, 1 the input)."""
  return _clip(img * factor)


def adjust_contrast(img: jax.Array, factor) -> jax.Array:
  """Scales the distance of every value from the image's mean luminance.

  As in torchvision, the reference is one scalar per image: the mean of the
  grayscale image. A factor of 0 gives a uniform gray image at that mean, 1
  gives the input.

  Args:
    img: [H, W, 3] RGB values in [0, 1].
    factor: Scalar contrast factor (>= 0).

  Returns:
    The adjusted image, clipped to [0, 1].
  """
  mean = jnp.mean(luminance(img))
  return _blend(img, mean, factor)


def adjust_saturation(img: jax.Array, factor) -> jax.Array:
  """Blends each pixel with its grayscale value.

  A factor of 0 gives the grayscale image, 1 the input, and values above 1
  increase the saturation.

  Args:
    img: [..., 3] RGB values in [0, 1].
    factor: Scalar saturation factor (>= 0).

  Returns:
    The adjusted image, clipped to [0, 1].
  """
  return _blend(img, to_grayscale(img), factor)


def adjust_hue(img: jax.Array, delta) -> jax.Array:
  """Rotates the hue of every pixel by ``delta`` turns, as torchvision and tf.image do.

  The image goes through HSV and back with saturation and value unchanged: a
  delta of 0 or 1 leaves it unchanged, 1/3 turns red into green.

  Args:
    img: [..., 3] RGB values in [0, 1].
    delta: Scalar hue shift, as a fraction of a full turn.

  Returns:
    The adjusted image, clipped to [0, 1].
  """
  return _clip(pix.adjust_hue(img, delta))


def solarize(img: jax.Array, threshold) -> jax.Array:
  """Inverts values at or above ``threshold``: x if x < t else 1 - x."""
  return pix.solarize(img, threshold)


def blur_kernel_size(image_size: int, fraction: float = 0.1) -> int:
  """Static blur kernel size: odd(round(fraction * image_size)), at least 3.

  Rounds half up, then bumps even sizes to the next odd number, so 224 pixels
  with fraction 0.1 give BYOL's 23-pixel kernel.

  Args:
    image_size: Side of the image in pixels.
    fraction: Kernel size as a fraction of the image size.

  Returns:
    An odd kernel size >= 3.
  """
  size = int(math.floor(fraction * image_size + 0.5))
  if size % 2 == 0:
    size += 1
  return max(size, 3)


def blur_sigma_range(spec: AugmentSpec, image_size: int) -> tuple[float, float]:
  """The blur sigma range in pixels for images of side ``image_size``.

  ``spec.blur_sigma`` is given for 224-pixel images (the BYOL setting) and is
  scaled linearly with the image size, so the blur removes the same fraction
  of detail at every resolution.

  Args:
    spec: The augmentation spec.
    image_size: Side of the image in pixels.

  Returns:
    (min, max) standard deviation in pixels.
  """
  scale = image_size / BLUR_REFERENCE_SIZE
  lo, hi = spec.blur_sigma
  return lo * scale, hi * scale


def gaussian_kernel1d(sigma, kernel_size: int) -> jax.Array:
  """A normalized 1-D Gaussian kernel of static odd size, centred."""
  if kernel_size < 1 or kernel_size % 2 != 1:
    raise ValueError(f"kernel_size must be a positive odd int: {kernel_size}")
  radius = kernel_size // 2
  x = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
  # Guard against sigma == 0; the kernel then degenerates to a delta.
  sigma = jnp.maximum(jnp.asarray(sigma, jnp.float32), 1e-6)
  kernel = jnp.exp(-0.5 * jnp.square(x / sigma))
  return kernel / jnp.sum(kernel)


def _blur_axis(images: jax.Array, kernel: jax.Array, axis: int) -> jax.Array:
  """Convolves ``images`` with a symmetric 1-D ``kernel`` along ``axis``, reflecting the borders."""
  radius = kernel.shape[0] // 2
  n = images.shape[axis]
  pad = [(0, 0)] * images.ndim
  pad[axis] = (radius, radius)
  # Reflection needs the image to be wider than the padding; tiny images repeat their edge.
  mode = "reflect" if radius < n else "edge"
  padded = jnp.pad(images, pad, mode=mode)
  out = jnp.zeros_like(images)
  for i in range(kernel.shape[0]):
    out = out + kernel[i] * jax.lax.slice_in_dim(padded, i, i + n, axis=axis)
  return out


def blur(images: jax.Array, sigma, kernel_size: int) -> jax.Array:
  """Separable Gaussian blur over the two spatial axes, reflecting the borders, unclipped.

  Hand-written rather than dm-pix's `gaussian_blur` for two reasons: dm-pix pads
  with zeros, which darkens the border, where torchvision (and BYOL) reflect the
  image; and its depthwise convolution, vmapped with one sigma per example over a
  batch sharded along an explicit mesh axis, needs a reshape that JAX cannot
  shard, while these shifted sums shard like any elementwise op.

  Args:
    images: [H, W, C] or [N, H, W, C] values.
    sigma: Scalar standard deviation in pixels (may be traced; 0 leaves the image unchanged).
    kernel_size: Static odd kernel size, used along both axes.

  Returns:
    The blurred images, of the input's shape.
  """
  kernel = gaussian_kernel1d(sigma, kernel_size)
  return _blur_axis(_blur_axis(images, kernel, axis=images.ndim - 3), kernel, axis=images.ndim - 2)


def gaussian_blur(img: jax.Array, sigma, kernel_size: int) -> jax.Array:
  """Gaussian blur of one image (BYOL's blur), clipped to [0, 1].

  Args:
    img: [H, W, C] values in [0, 1].
    sigma: Scalar standard deviation in pixels (may be traced).
    kernel_size: Static odd kernel size, used along both axes.

  Returns:
    The blurred image. The kernel sums to 1, so constant images are unchanged.
  """
  return _clip(blur(img, sigma, kernel_size))


# ----------------------------------------------------------------------------
# Random parameters and the full pipeline.
# ----------------------------------------------------------------------------


class AugmentParams(NamedTuple):
  """Random decisions for one example (a pytree; batched under vmap).

  Attributes:
    apply_jitter: Whether the colour jitter is applied.
    jitter_order: int32 [4], a permutation of (BRIGHTNESS, CONTRAST,
      SATURATION, HUE): the order in which the jitter operations are applied.
    brightness: Brightness factor.
    contrast: Contrast factor.
    saturation: Saturation factor.
    hue: Hue shift (fraction of a turn).
    apply_grayscale: Whether the image is converted to grayscale.
    apply_blur: Whether the image is blurred.
    blur_sigma: Blur standard deviation in pixels of this image (already
      scaled to its size).
    apply_solarize: Whether the image is solarized.
  """

  apply_jitter: jax.Array
  jitter_order: jax.Array
  brightness: jax.Array
  contrast: jax.Array
  saturation: jax.Array
  hue: jax.Array
  apply_grayscale: jax.Array
  apply_blur: jax.Array
  blur_sigma: jax.Array
  apply_solarize: jax.Array


# Positions in the vector of uniform draws behind one example's parameters.
_U_JITTER, _U_BRIGHTNESS, _U_CONTRAST, _U_SATURATION, _U_HUE = range(5)
_U_GRAYSCALE, _U_BLUR, _U_SIGMA, _U_SOLARIZE = range(5, 9)
_U_ORDER = 9  # NUM_JITTER_OPS draws from here on, ranked to give the order.
_NUM_UNIFORMS = _U_ORDER + NUM_JITTER_OPS


def sample_augment_params(rng: jax.Array, spec: AugmentSpec,
                          image_size: int) -> AugmentParams:
  """Draws the random decisions for one example.

  All decisions come from one vector of U[0, 1) draws (a single PRNG call,
  which is much cheaper to compile than one call per decision). Each decision
  has a fixed position in that vector, so changing or disabling one operation
  does not change the draws of the others. Bernoulli(p) events are ``u < p``,
  factors are ``lo + u * (hi - lo)`` and the jitter order ranks four draws (a
  uniformly random permutation).

  Args:
    rng: PRNG key for this example.
    spec: Static augmentation spec.
    image_size: Side of the image in pixels (min of height and width), used to
      scale the blur sigma.

  Returns:
    The per-example parameters.
  """
  u = jax.random.uniform(rng, (_NUM_UNIFORMS,), jnp.float32)

  def between(i, lo, hi):
    return lo + u[i] * (hi - lo)

  sigma_lo, sigma_hi = blur_sigma_range(spec, image_size)
  return AugmentParams(
      apply_jitter=u[_U_JITTER] < spec.jitter_prob,
      jitter_order=jnp.argsort(u[_U_ORDER:]).astype(jnp.int32),
      brightness=between(_U_BRIGHTNESS, max(0.0, 1.0 - spec.brightness),
                         1.0 + spec.brightness),
      contrast=between(_U_CONTRAST, max(0.0, 1.0 - spec.contrast),
                       1.0 + spec.contrast),
      saturation=between(_U_SATURATION, max(0.0, 1.0 - spec.saturation),
                         1.0 + spec.saturation),
      hue=between(_U_HUE, -spec.hue, spec.hue),
      apply_grayscale=u[_U_GRAYSCALE] < spec.grayscale_prob,
      apply_blur=u[_U_BLUR] < spec.blur_prob,
      blur_sigma=between(_U_SIGMA, sigma_lo, sigma_hi),
      apply_solarize=u[_U_SOLARIZE] < spec.solarize_prob,
  )


def _color_jitter(img: jax.Array, params: AugmentParams,
                  spec: AugmentSpec) -> jax.Array:
  """Applies the four jitter operations in ``params.jitter_order``."""
  identity = lambda x, p: x
  # Operations with zero strength are the identity; leave them out statically.
  branches = [identity] * NUM_JITTER_OPS
  if spec.brightness > 0:
    branches[BRIGHTNESS] = lambda x, p: adjust_brightness(x, p.brightness)
  if spec.contrast > 0:
    branches[CONTRAST] = lambda x, p: adjust_contrast(x, p.contrast)
  if spec.saturation > 0:
    branches[SATURATION] = lambda x, p: adjust_saturation(x, p.saturation)
  if spec.hue > 0:
    branches[HUE] = lambda x, p: adjust_hue(x, p.hue)
  if all(b is identity for b in branches):
    return img
  # Each step computes every operation and selects the one the order asks for,
  # which is what vmap turns a `lax.switch` into anyway. Looping over the four
  # steps, rather than unrolling them, compiles markedly faster.
  def step(i, x):
    candidates = [branch(x, params) for branch in branches]
    return jax.lax.select_n(params.jitter_order[i], *candidates)

  return jax.lax.fori_loop(0, NUM_JITTER_OPS, step, img)


def apply_augment_params(img: jax.Array, params: AugmentParams,
                         spec: AugmentSpec) -> jax.Array:
  """Applies the pipeline to one image with given random decisions.

  Operates on a single image; `augment_images` vmaps it over the batch.

  Args:
    img: [H, W, 3] float32 in [0, 1].
    params: Decisions from `sample_augment_params` (unbatched).
    spec: The static spec the parameters were drawn with.

  Returns:
    The augmented [H, W, 3] float32 image in [0, 1].
  """
  # Statically disabled stages are skipped entirely.
  if spec.jitter_prob > 0:
    img = jnp.where(params.apply_jitter, _color_jitter(img, params, spec), img)
  if spec.grayscale_prob > 0:
    img = jnp.where(params.apply_grayscale, to_grayscale(img), img)
  if spec.blur_prob > 0 and spec.blur_sigma[1] > 0:
    size = min(img.shape[0], img.shape[1])
    kernel_size = blur_kernel_size(size, spec.blur_kernel_fraction)
    img = jnp.where(params.apply_blur,
                    gaussian_blur(img, params.blur_sigma, kernel_size), img)
  if spec.solarize_prob > 0:
    img = jnp.where(params.apply_solarize,
                    solarize(img, spec.solarize_threshold), img)
  return img


def to_float_image(images: jax.Array) -> jax.Array:
  """Integers in [0, 255] (uint8) -> float32 in [0, 1]; floats are cast."""
  images = jnp.asarray(images)
  if jnp.issubdtype(images.dtype, jnp.integer):
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def _match_batch_sharding(keys: jax.Array, images: jax.Array) -> jax.Array:
  """Shards the per-example keys like the batch axis of ``images``.

  Under explicit sharding (the default of `jax.make_mesh`), `jax.vmap` needs
  all mapped inputs sharded alike along the mapped axis. Each key is the same
  whichever device holds it, so this does not change any value.
  """
  sharding = getattr(jax.typeof(images), "sharding", None)
  spec = getattr(sharding, "spec", None)
  if not spec or spec[0] is None:
    return keys
  batch_sharding = jax.sharding.NamedSharding(
      sharding.mesh, jax.sharding.PartitionSpec(spec[0]))
  return jax.sharding.reshard(keys, batch_sharding)


def _mesh_context(images: jax.Array):
  """Makes the mesh of sharded ``images`` the current (abstract) mesh.

  Batching control flow (the jitter loop) over a batch sharded along explicit
  mesh axes needs that mesh to be the current one. It is when the caller used
  `jax.set_mesh`; this covers callers whose sharding only came with the inputs.
  """
  sharding = getattr(jax.typeof(images), "sharding", None)
  mesh = getattr(sharding, "mesh", None)
  if (mesh is None or mesh.empty
      or not jax.sharding.get_abstract_mesh().empty):
    return contextlib.nullcontext()
  return jax.sharding.use_abstract_mesh(mesh)


@functools.partial(jax.jit, static_argnames="spec")
def augment_images(rng: jax.Array, images: jax.Array,
                   spec: AugmentSpec) -> jax.Array:
  """Augments a batch of images, with independent decisions per example.

  Jitted with ``spec`` static (a frozen, hashable dataclass); it can be called
  directly or from inside a jitted train step. Example ``i`` uses the ``i``-th
  key of ``jax.random.split(rng, batch)``, so the output does not depend on how
  the batch is sharded, provided ``rng`` is the same everywhere. The output
  keeps the batch sharding of ``images``.

  Args:
    rng: PRNG key for the whole batch.
    images: [B, H, W, 3] uint8 in [0, 255] or float in [0, 1].
    spec: Static augmentation spec (a hashable `AugmentSpec`).

  Returns:
    float32 [B, H, W, 3] in [0, 1].
  """
  images = to_float_image(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"expected images of shape [B, H, W, 3], got "
                     f"{images.shape}")
  batch, height, width, _ = images.shape
  image_size = min(height, width)
  keys = _match_batch_sharding(jax.random.split(rng, batch), images)

  def one(key, img):
    params = sample_augment_params(key, spec, image_size)
    return apply_augment_params(img, params, spec)

  with _mesh_context(images):
    return _clip(jax.vmap(one)(keys, images))


def normalize(images: jax.Array, mean: Any = IMAGENET_MEAN,
              std: Any = IMAGENET_STD) -> jax.Array:
  """Standardizes each channel: (images - mean) / std, in float32.

  Args:
    images: [..., 3] float in [0, 1] (uint8 is first divided by 255).
    mean: Per-channel mean, broadcast against the last axis.
    std: Per-channel standard deviation.

  Returns:
    float32 array of the same shape.
  """
  images = to_float_image(images)
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (images - mean) / std
