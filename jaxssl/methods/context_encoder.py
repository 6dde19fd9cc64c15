"""Context encoders (Pathak, Krähenbühl, Donahue, Darrell, Efros 2016, "Context Encoders: Feature
Learning by Inpainting").

A region of each image is blanked out (filled with the data mean, 0 after normalisation) and an
encoder-decoder must paint it back from the context around it:

  x_hat = F((1 - M) * x),  L_rec = sum w * (x_hat - x)^2 / sum w,   w = M + overlap_weight * N(M)

where M is 1 in the hole and N(M) marks the context pixels within `overlap` px of the hole: the
official code predicts a 4-px border of context around its central hole and weights it 10x, so the
fill meets its surroundings. The encoder is this library's backbone (its feature map); the paper's
channel-wise fully connected bottleneck (each channel's h*w cells fully connected to themselves,
then a 1x1 convolution across channels) lets every cell see the whole context without the
parameters of a dense layer; up-convolutions decode the image.

L2 alone paints the blurry mean of the plausible fills. An adversarial discriminator D, the second
player, tells real images from images whose hole holds the prediction, and the inpainter also
minimises its loss on the composite:

  L_F = 0.999 L_rec + 0.001 BCE(D((1 - M) x + M x_hat), real)      (paper's weights)
  L_D = BCE(D(x), real) + BCE(D((1 - M) x + M x_hat), fake)

D is a `jaxssl.methods.base.Player` with its own Adam (beta1 0.5, as the official code, at 1/10 of
the inpainter's learning rate), so L_D moves only D and L_F only the inpainter. The paper's D sees
the predicted centre patch for the central mask; here it sees the whole composite image, which is
the same question for every mask shape.

Masks (`context_encoder.mask`, jaxssl/transforms/pretext.py): 'central' (the paper's best-known
setting), 'random_block' (several smaller squares) and 'random_region' (smooth random shapes, a
quarter of the image; the paper's features transfer best with these).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx

from jaxssl import models, optim
from jaxssl.errors import UserError
from jaxssl.methods.base import Player, TrainState
from jaxssl.methods.common import linear_probe_loss, view_images
from jaxssl.models import functional
from jaxssl.transforms import augment, pretext
from jaxssl.models.normalization import batch_norm

DISCRIMINATOR = "discriminator"


class ChannelWiseFC(nnx.Module):
  """Each channel's h*w cells fully connected to themselves (no mixing across channels), then a
  1x1 convolution that mixes the channels: the paper's bottleneck, h*w*h*w*C + C*C weights where a
  dense layer would need (h*w*C)^2."""

  def __init__(self, cells: int, channels: int, *, rngs: nnx.Rngs):
    init = nnx.initializers.lecun_normal(in_axis=1, out_axis=2, batch_axis=(0,))
    self.kernel = nnx.Param(init(rngs.params(), (channels, cells, cells)))
    self.bias = nnx.Param(jnp.zeros((channels, cells)))
    self.mix = nnx.Conv(channels, channels, kernel_size=(1, 1), rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    batch, height, width, channels = x.shape
    cells = x.reshape(batch, height * width, channels)
    connected = jnp.einsum("bpc,cpq->bqc", cells, self.kernel[...]) + self.bias[...].T
    return self.mix(nnx.relu(connected).reshape(batch, height, width, channels))


class Decoder(nnx.Module):
  """Up-convolutions (4x4, stride 2) with BN and ReLU, each halving the width, from the feature
  map to the image, then a 3x3 convolution to RGB (standardised, unbounded)."""

  def __init__(self, channels: int, upsamplings: int, min_width: int, *, rngs: nnx.Rngs):
    widths = [channels] + [max(min_width, channels // 2 ** (i + 1)) for i in range(upsamplings)]
    self.ups = nnx.List([
        nnx.ConvTranspose(w_in, w_out, kernel_size=(4, 4), strides=(2, 2), padding="SAME", rngs=rngs)
        for w_in, w_out in zip(widths[:-1], widths[1:])
    ])
    self.norms = nnx.List([batch_norm(w, rngs=rngs) for w in widths[1:]])
    self.output = nnx.Conv(widths[-1], 3, kernel_size=(3, 3), rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    for up, norm in zip(self.ups, self.norms):
      x = nnx.relu(norm(up(x)))
    return self.output(x)


class Discriminator(nnx.Module):
  """DCGAN's discriminator: 4x4 stride-2 convolutions with leaky ReLU (BN after the first), down
  to at most 4x4 cells, then global average pooling and one logit (real vs inpainted)."""

  def __init__(self, image_size: int, width: int, *, rngs: nnx.Rngs):
    layers = max(1, int(math.log2(image_size // 4)))
    widths = [3] + [width * 2**i for i in range(layers)]
    self.convs = nnx.List([
        nnx.Conv(w_in, w_out, kernel_size=(4, 4), strides=(2, 2), rngs=rngs) for w_in, w_out in zip(widths[:-1], widths[1:])
    ])
    self.norms = nnx.List([batch_norm(w, rngs=rngs) for w in widths[2:]])
    self.logit = nnx.Linear(widths[-1], 1, rngs=rngs)

  def __call__(self, images: jax.Array) -> jax.Array:
    x = nnx.leaky_relu(self.convs[0](images), 0.2)
    for conv, norm in zip(self.convs[1:], self.norms):
      x = nnx.leaky_relu(norm(conv(x)), 0.2)
    return self.logit(x.mean(axis=(1, 2)))[:, 0]


def reconstruction_loss(predicted: jax.Array, target: jax.Array, mask: jax.Array, overlap: int, overlap_weight: float) -> jax.Array:
  """Weighted mean squared error over the hole (weight 1) and its `overlap`-px border (weight
  `overlap_weight`); context further out is not scored."""
  weights = mask + overlap_weight * pretext.near_hole(mask, overlap)
  squared = jnp.sum(jnp.square(predicted - target), axis=-1, keepdims=True) / predicted.shape[-1]
  return jnp.sum(weights * squared) / jnp.maximum(jnp.sum(weights), 1.0)


def real_fake_losses(real_logits: jax.Array, fake_logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(the discriminator's loss, the inpainter's adversarial loss), both binary cross-entropies:
  D labels real images 1 and composites 0; the inpainter wants its composites labelled 1."""
  discriminator = jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))
  inpainter = jnp.mean(jax.nn.softplus(-fake_logits))
  return discriminator, inpainter


class ContextEncoder:
  """Context encoders as pure functions; see the module docstring."""

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0):
    self.config = config
    self.num_classes = num_classes
    cfg = config.context_encoder
    if cfg.mask not in pretext.MASKS:
      raise UserError(f"config.context_encoder.mask is '{cfg.mask}'; choose one of {pretext.MASKS}.")
    self.view_specs = tuple(augment.spec_from_config(c) for c in config.augment.views)
    self.image_size = config.augment.views[0].size
    abstract = nnx.eval_shape(lambda: self._networks(nnx.Rngs(0)))
    self.backbone, self.bottleneck, self.decoder, self.discriminator, self.probe = (functional.split_module(m)[0] for m in abstract)
    # The discriminator follows its own objective with Adam at a fraction of the inpainter's rate.
    schedule = optim.learning_rate_schedule(config)
    discriminator_rate = lambda step: schedule(step) * cfg.discriminator_learning_rate_ratio
    self.players = {DISCRIMINATOR: Player(modules=(DISCRIMINATOR,), objective=DISCRIMINATOR,
                                          optimizer=optax.adam(discriminator_rate, b1=config.optimizer.get("adam_b1", 0.9)))}

  def _networks(self, rngs: nnx.Rngs) -> tuple[nnx.Module, ...]:
    cfg = self.config.context_encoder
    backbone = models.make_backbone(self.config.model, rngs)
    probe_input = jnp.zeros((1, self.image_size, self.image_size, 3), jnp.float32)
    shape = jax.eval_shape(lambda: models.make_backbone(self.config.model, nnx.Rngs(0)).feature_map(probe_input)).shape
    cells, channels = shape[1] * shape[2], shape[3]
    upsamplings = int(round(math.log2(self.image_size / shape[1])))
    if shape[1] * 2**upsamplings != self.image_size:
      raise UserError(f"The backbone's {shape[1]}x{shape[2]} feature map does not double up to {self.image_size} px; use an image size that is a power-of-two multiple of it.")
    bottleneck = ChannelWiseFC(cells, channels, rngs=rngs)
    decoder = Decoder(channels, upsamplings, cfg.decoder_min_width, rngs=rngs)
    discriminator = Discriminator(self.image_size, cfg.discriminator_width, rngs=rngs)
    probe = nnx.Linear(backbone.num_features, max(self.num_classes, 1), rngs=rngs)
    return backbone, bottleneck, decoder, discriminator, probe

  def init(self, rng: jax.Array) -> tuple[dict, dict]:
    names = ("backbone", "bottleneck", "decoder", DISCRIMINATOR, "probe")
    _, params, stats = zip(*(functional.split_module(m) for m in self._networks(nnx.Rngs(rng))))
    params = dict(zip(names, params))
    if not self.num_classes:
      del params["probe"]
    return params, {"batch_stats": {"backbone": stats[0], "decoder": stats[2], DISCRIMINATOR: stats[3]}}

  def masks(self, rng: jax.Array, batch_size: int) -> jax.Array:
    """[B, H, W, 1] holes of the configured kind."""
    cfg, size = self.config.context_encoder, self.image_size
    if cfg.mask == "central":
      return pretext.central_mask(batch_size, size, cfg.overlap)
    if cfg.mask == "random_block":
      return pretext.random_block_mask(rng, batch_size, size, cfg.num_blocks, max(1, round(size * cfg.block_fraction)))
    return pretext.random_region_mask(rng, batch_size, size, cfg.region_fraction, cfg.region_noise_cells)

  def inpaint(self, params, stats, images: jax.Array, mask: jax.Array, *, train: bool):
    """(prediction of every pixel, pooled backbone features, new batch stats) of standardised
    `images` whose hole `mask` is filled with the mean (0)."""
    feature_map, backbone_stats = self.backbone(params["backbone"], stats["backbone"], images * (1.0 - mask), train=train, method="feature_map")
    bottleneck, _ = self.bottleneck(params["bottleneck"], {}, feature_map, train=train)
    predicted, decoder_stats = self.decoder(params["decoder"], stats["decoder"], bottleneck, train=train)
    return predicted.astype(jnp.float32), feature_map.mean(axis=(1, 2)), {"backbone": backbone_stats, "decoder": decoder_stats}

  def whole_image_statistics(self, params, extra, images: jax.Array) -> dict:
    """The backbone's running BatchNorm averages moved by a forward pass over the whole images.

    Training normalises each batch with its own statistics, so the running averages serve only
    evaluation, which embeds whole images: gathered on images with a mean-filled hole they
    describe another input. This pass's output is discarded, so no gradient flows through it."""
    _, stats = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], jax.lax.stop_gradient(images), train=True, method="feature_map")
    return stats

  def loss(self, params, extra, batch, rng, step):
    del step
    cfg = self.config.context_encoder
    view_rng, mask_rng = jax.random.split(rng)
    (images,) = view_images(view_rng, (batch["view0"],), self.view_specs[:1])
    mask = self.masks(mask_rng, images.shape[0])
    predicted, features, stats = self.inpaint(params, extra["batch_stats"], images, mask, train=True)
    if cfg.statistics_from_whole_images:
      stats["backbone"] = self.whole_image_statistics(params, extra, images)
    reconstruction = reconstruction_loss(predicted, images, mask, cfg.overlap, cfg.overlap_weight)
    composite = images * (1.0 - mask) + predicted * mask
    # One discriminator pass over real and inpainted images together: one set of BN statistics.
    both = jnp.concatenate([images, composite])
    logits, stats[DISCRIMINATOR] = self.discriminator(params[DISCRIMINATOR], extra["batch_stats"][DISCRIMINATOR], both, train=True)
    real_logits, fake_logits = jnp.split(logits.astype(jnp.float32), 2)
    discriminator_loss, adversarial = real_fake_losses(real_logits, fake_logits)
    total = cfg.reconstruction_weight * reconstruction + cfg.adversarial_weight * adversarial
    metrics = {
        "reconstruction_loss": reconstruction,
        "adversarial_loss": adversarial,
        "discriminator_loss": discriminator_loss,
        "discriminator_real_accuracy": jnp.mean(real_logits > 0),
        "discriminator_fake_accuracy": jnp.mean(fake_logits < 0),
        "hole_fraction": jnp.mean(mask),
    }
    if self.num_classes:
      probe_loss, probe_accuracy = linear_probe_loss(self.probe, params["probe"], features, batch["label"])
      total = total + probe_loss
      metrics.update(probe_loss=probe_loss, probe_top1=probe_accuracy)
    return total, {"batch_stats": stats, "objectives": {DISCRIMINATOR: discriminator_loss}, "metrics": metrics}

  def after_update(self, state: TrainState, aux: dict) -> dict:
    return {"batch_stats": aux["batch_stats"]}

  def embed(self, params, extra, images, *, train: bool = False):
    features, _ = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], images, train=train)
    return features

  sample_columns = ("masked input", "inpainted", "original")  # plots/samples.png, left to right

  def sample_grid(self, params, extra, images: jax.Array) -> dict[str, jax.Array]:
    """Columns of plots/samples.png: the input with its hole, the hole painted in, the original."""
    rgb = augment.to_float_image(images)
    standardised = augment.normalize(rgb)
    mask = self.masks(jax.random.key(0), rgb.shape[0])
    predicted, _, _ = self.inpaint(params, extra["batch_stats"], standardised, mask, train=False)
    unstandardise = lambda x: jnp.clip(x * jnp.asarray(augment.IMAGENET_STD) + jnp.asarray(augment.IMAGENET_MEAN), 0.0, 1.0)
    return {
        "masked input": unstandardise(standardised * (1.0 - mask)),
        "inpainted": unstandardise(standardised * (1.0 - mask) + predicted * mask),
        "original": rgb,
    }
