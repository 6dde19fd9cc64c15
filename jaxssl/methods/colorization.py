"""Colorful image colorization (Zhang, Isola, Efros 2016) as a pretext task.

The network sees only the lightness L of an image and predicts, for each cell of a coarse grid,
a distribution over quantised ab colour values (`jaxssl.transforms.colour`): to colour a scene
it must recognise what is in it. Per target cell (ab point-sampled at the centre of each cell,
as the official code samples at stride 4):

  L = - sum_cells w(cell) sum_q Z_q log softmax(logits)_q,

with Z the soft-encoded true colour (a Gaussian over its nearest bins; paper 5, official code 10,
sigma 5) and w the class-rebalancing weight of the true colour's nearest bin, ((1 - lambda) p +
lambda / Q)^-1 normalised so that E_p[w] = 1 (lambda 0.5), zero for an image with no colour at all
(the official `NonGrayMask`: ab never above 5). The official code applies w to the gradient
only; a constant weight on the loss has the same gradient. p, the prior over the bins, is the
paper's empirical distribution of the training data's colours, smoothed with a Gaussian of
sigma 5 ab units (`colorization.prior_sigma`): here it is counted as the training batches go by
(`extra['colour_counts']`, the current batch included), so no pass over the data is needed
before training.

Input harmonisation: L (in [0, 100]) enters as (L - 50) / 50 on all three input channels, so a
backbone built for RGB takes it unchanged; `embed` does the same to the RGB images it is given,
so evaluation sees what training saw. The head is a 1x1 convolution on the last stage's feature
map, upsampled to the target grid (the paper's network is fully convolutional to stride 4).
Decoding (the sample grid in plots/) is the annealed mean (T 0.38).

A small CPU network's last stage is too coarse for that (2 x 2 cells at 32 px), so the head can
read a hypercolumn instead, as Larsson et al.'s does: the outputs of the last
`colorization.hypercolumn_blocks` residual blocks, each resized (bilinearly) to the target grid
and concatenated, through a hidden 1x1 layer of `colorization.head_hidden` units (their code:
1024) before the output layer. The pooled features that evaluation uses stay the last stage's.

`colorization.head = 'larsson'` is the head of Larsson, Maire and Shakhnarovich (2017,
"Colorization as a Proxy Task for Visual Understanding"): the input is grey (the mean of RGB, as
their code), and each target cell gets two 32-bin histograms, of hue (HSV's H, circular) and of
chroma (max(RGB) - min(RGB)), trained with KL divergence against the true value spread over its
two nearest bins:

  L = KL(chroma) + 5 * chroma * KL(hue)      (their weighting: a grey pixel's hue means nothing)

Decoding takes the expected chroma and the circular mean of the hue and puts that colour on the
grey level.

`colorization.input` ('lightness' or 'grey') feeds either head the other's input; by default each
reads its own paper's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import dm_pix as pix
import ml_collections
import numpy as np
from flax import nnx

from jaxssl import models
from jaxssl.errors import UserError
from jaxssl.methods.base import TrainState
from jaxssl.methods.common import linear_probe_loss
from jaxssl.models import functional
from jaxssl.transforms import augment, colour

# Below this ab magnitude everywhere, an image has no colour to learn from (official NonGrayMask).
GREY_THRESHOLD = 5.0
HEADS = ("zhang", "larsson")
INPUTS = ("lightness", "grey")  # Lab's L (Zhang et al.) or the mean of RGB (Larsson et al.)
LARSSON_BINS = 32  # hue and chroma bins (Larsson et al. 2017)
LARSSON_HUE_WEIGHT = 5.0  # official: CE_chroma + mean(5 * chroma * CE_hue)


def grey_input(rgb: jax.Array) -> jax.Array:
  """RGB in [0, 1] -> Larsson's input: the mean of RGB, as 2 * grey - 1 on three channels."""
  return jnp.broadcast_to(2.0 * rgb.mean(axis=-1, keepdims=True) - 1.0, rgb.shape)


def interpolated_histogram(values: jax.Array, bins: int, circular: bool) -> jax.Array:
  """Values in [0, 1] -> [..., bins] histograms with the value's mass split linearly between the
  two nearest bin centres (k + 0.5) / bins; hue wraps around, chroma is clamped at the ends."""
  position = values * bins - 0.5
  lower = jnp.floor(position)
  upper_weight = position - lower
  lower, upper = lower.astype(jnp.int32), lower.astype(jnp.int32) + 1
  if circular:
    lower, upper = lower % bins, upper % bins
  else:
    lower, upper = jnp.clip(lower, 0, bins - 1), jnp.clip(upper, 0, bins - 1)
  return (1.0 - upper_weight)[..., None] * jax.nn.one_hot(lower, bins) + upper_weight[..., None] * jax.nn.one_hot(upper, bins)


def hue_chroma(rgb: jax.Array) -> tuple[jax.Array, jax.Array]:
  """RGB in [0, 1] -> (hue in [0, 1), chroma = max - min in [0, 1])."""
  return pix.rgb_to_hsv(rgb)[..., 0] % 1.0, rgb.max(axis=-1) - rgb.min(axis=-1)


def kl_divergence(target: jax.Array, logits: jax.Array) -> jax.Array:
  """KL(target || softmax(logits)) over the last axis (0 log 0 = 0)."""
  entropy_term = jnp.sum(jnp.where(target > 0, target * jnp.log(jnp.where(target > 0, target, 1.0)), 0.0), axis=-1)
  return entropy_term - jnp.sum(target * jax.nn.log_softmax(logits), axis=-1)


def larsson_loss(logits: jax.Array, rgb_cells: jax.Array) -> jax.Array:
  """Mean over cells of KL(chroma) + 5 * chroma * KL(hue); logits [..., 2 * 32] are hue then chroma."""
  hue, chroma = hue_chroma(rgb_cells)
  hue_logits, chroma_logits = jnp.split(logits.astype(jnp.float32), 2, axis=-1)
  chroma_kl = kl_divergence(interpolated_histogram(chroma, LARSSON_BINS, circular=False), chroma_logits)
  hue_kl = kl_divergence(interpolated_histogram(hue, LARSSON_BINS, circular=True), hue_logits)
  return jnp.mean(chroma_kl + LARSSON_HUE_WEIGHT * chroma * hue_kl)


def larsson_decode(logits: jax.Array, grey: jax.Array) -> jax.Array:
  """Expected chroma and circular-mean hue put on the grey level: [..., 64], [...] -> RGB [..., 3]."""
  hue_logits, chroma_logits = jnp.split(logits.astype(jnp.float32), 2, axis=-1)
  centres = (jnp.arange(LARSSON_BINS) + 0.5) / LARSSON_BINS
  chroma = jnp.sum(jax.nn.softmax(chroma_logits) * centres, axis=-1)
  angle = 2 * jnp.pi * centres
  hue_probability = jax.nn.softmax(hue_logits)
  hue = (jnp.arctan2(jnp.sum(hue_probability * jnp.sin(angle), -1), jnp.sum(hue_probability * jnp.cos(angle), -1)) / (2 * jnp.pi)) % 1.0
  pure = pix.hsv_to_rgb(jnp.stack([hue, jnp.ones_like(hue), jnp.ones_like(hue)], axis=-1))  # max 1, min 0
  coloured = chroma[..., None] * pure
  return jnp.clip(coloured - coloured.mean(axis=-1, keepdims=True) + grey[..., None], 0.0, 1.0)


def hypercolumn_at(feature_map: jax.Array, cells: int) -> jax.Array:
  """A block's output [B, h, w, C] resized bilinearly to the target grid [B, cells, cells, C]
  (antialiased when it shrinks, so each cell averages the positions it covers)."""
  batch, _, _, channels = feature_map.shape
  return jax.image.resize(feature_map, (batch, cells, cells, channels), method="linear", antialias=True)


class HypercolumnHead(nnx.Sequential):
  """1x1 layers on a hypercolumn: the blocks' outputs resized to the target grid, concatenated.

  The parameters are those of that Sequential on the concatenation, but its first layer runs on
  each block at the block's own resolution before the resize: a 1x1 layer and a (linear) resize
  commute, so the result is the same while a 2 x 2 block is projected at 4 positions, not 64.
  """

  def __init__(self, widths: tuple[int, ...], hidden: int, outputs: int, rngs: nnx.Rngs):
    if hidden:
      layers = (nnx.Conv(sum(widths), hidden, kernel_size=(1, 1), rngs=rngs), nnx.relu, nnx.Conv(hidden, outputs, kernel_size=(1, 1), rngs=rngs))
    else:
      layers = (nnx.Conv(sum(widths), outputs, kernel_size=(1, 1), rngs=rngs),)
    super().__init__(*layers)
    self.widths = tuple(widths)

  def __call__(self, blocks: list[jax.Array], cells: int) -> jax.Array:
    # The 1x1 layers run as matrix products: XLA:CPU's gradient of a 1x1 convolution's kernel
    # takes about three times as long as the same product's.
    first, *rest = self.layers
    kernel = first.kernel[...][0, 0]  # [sum(widths), out]
    starts = np.cumsum((0,) + self.widths[:-1])
    projected = [block @ kernel[start : start + width] for block, start, width in zip(blocks, starts, self.widths)]
    x = sum(hypercolumn_at(p, cells) for p in projected) + first.bias[...]
    for layer in rest:
      x = x @ layer.kernel[...][0, 0] + layer.bias[...] if isinstance(layer, nnx.Conv) else layer(x)
    return x


def lightness_input(rgb: jax.Array) -> jax.Array:
  """RGB in [0, 1] -> the network's input: (L - 50) / 50 on three channels."""
  lightness = (colour.srgb_to_lab(rgb)[..., :1] - 50.0) / 50.0
  return jnp.broadcast_to(lightness, rgb.shape)


def unnormalize(images: jax.Array) -> jax.Array:
  """`augment.normalize`'s inverse: standardised images -> RGB in [0, 1]."""
  return images * jnp.asarray(augment.IMAGENET_STD) + jnp.asarray(augment.IMAGENET_MEAN)


def cell_centres(images: jax.Array, cells: int) -> jax.Array:
  """The pixel at the centre of each of cells x cells equal cells: [B, H, W, C] -> [B, cells, cells, C]."""
  height, width = images.shape[1:3]
  rows = (jnp.arange(cells) * height + height // 2) // cells
  cols = (jnp.arange(cells) * width + width // 2) // cells
  return images[:, rows][:, :, cols]


def input_kind(config: ml_collections.ConfigDict) -> str:
  """What the backbone reads: `colorization.input`, by default the head's own paper's input."""
  cfg = config.colorization
  kind = cfg.get("input", "") or ("lightness" if cfg.get("head", "zhang") == "zhang" else "grey")
  if kind not in INPUTS:
    raise UserError(f"config.colorization.input is '{kind}'; choose one of {INPUTS} (or '' for the head's own).")
  return kind


def load_bins(bins_file: str) -> np.ndarray:
  """The ab bins: a [Q, 2] array from `bins_file` (.npy, e.g. the paper's 313), else the derived
  in-gamut set."""
  if not bins_file:
    return colour.gamut_ab_bins()
  bins = np.load(bins_file).astype(np.float32)
  if bins.ndim != 2 or bins.shape[1] != 2:
    raise ValueError(f"config.colorization.bins_file holds an array of shape {bins.shape}; it must be [Q, 2] ab values.")
  return bins


class Colorization:
  """Colorization as pure functions; see the module docstring."""

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0):
    self.config = config
    self.num_classes = num_classes
    self.head = config.colorization.get("head", "zhang")
    if self.head not in HEADS:
      raise UserError(f"config.colorization.head is '{self.head}'; choose one of {HEADS}.")
    self.input = input_kind(config)
    self.bins = load_bins(config.colorization.bins_file)
    self.num_outputs = len(self.bins) if self.head == "zhang" else 2 * LARSSON_BINS
    self.view_specs = tuple(augment.spec_from_config(c) for c in config.augment.views)
    abstract = nnx.eval_shape(lambda: self._networks(nnx.Rngs(0)))
    self.backbone, self.colour_head, self.probe = (functional.split_module(m)[0] for m in abstract)

  def _networks(self, rngs: nnx.Rngs) -> tuple[nnx.Module, ...]:
    backbone = models.make_backbone(self.config.model, rngs)
    cfg = self.config.colorization
    hypercolumn_blocks, hidden = cfg.get("hypercolumn_blocks", 1), cfg.get("head_hidden", 0)
    widths = [backbone.num_features]
    if hypercolumn_blocks > 1:
      if not hasattr(backbone, "block_widths"):
        raise UserError(f"config.colorization.hypercolumn_blocks > 1 needs a ResNet backbone, not '{self.config.model.backbone}'; set it to 1.")
      if hypercolumn_blocks > len(backbone.block_widths):
        raise UserError(
            f"config.colorization.hypercolumn_blocks is {hypercolumn_blocks} but the backbone has {len(backbone.block_widths)} blocks; use at most that many."
        )
      widths = backbone.block_widths[-hypercolumn_blocks:]
    if hypercolumn_blocks > 1:
      colour_head = HypercolumnHead(widths, hidden, self.num_outputs, rngs)
    elif hidden:
      colour_head = nnx.Sequential(
          nnx.Conv(sum(widths), hidden, kernel_size=(1, 1), rngs=rngs), nnx.relu, nnx.Conv(hidden, self.num_outputs, kernel_size=(1, 1), rngs=rngs)
      )
    else:
      colour_head = nnx.Conv(sum(widths), self.num_outputs, kernel_size=(1, 1), rngs=rngs)
    probe = nnx.Linear(backbone.num_features, max(self.num_classes, 1), rngs=rngs)
    return backbone, colour_head, probe

  def init(self, rng: jax.Array) -> tuple[dict, dict]:
    names = ("backbone", "colour_head", "probe")
    _, params, stats = zip(*(functional.split_module(m) for m in self._networks(nnx.Rngs(rng))))
    params = dict(zip(names, params))
    if not self.num_classes:
      del params["probe"]
    return params, {"batch_stats": {"backbone": stats[0]}, "colour_counts": jnp.zeros((len(self.bins),), jnp.float32)}

  def network_input(self, rgb: jax.Array) -> jax.Array:
    """What the backbone sees of RGB in [0, 1]: Zhang's lightness or Larsson's grey."""
    return lightness_input(rgb) if self.input == "lightness" else grey_input(rgb)

  @classmethod
  def backbone_input_fn(cls, config: ml_collections.ConfigDict):
    """Normalised RGB images -> what the backbone reads (lightness or grey), so that an exported
    backbone is fed as in training (`jaxssl.evaluation.pretrained`)."""
    to_input = lightness_input if input_kind(config) == "lightness" else grey_input
    return lambda images: to_input(unnormalize(images))

  def predict(self, params, extra, rgb: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array, dict]:
    """(logits [B, cells, cells, Q] on the target grid, pooled features, new batch stats)."""
    cfg = self.config.colorization
    cells = cfg.target_cells
    backbone_params, backbone_stats, grey = params["backbone"], extra["batch_stats"]["backbone"], self.network_input(rgb)
    hypercolumn_blocks = cfg.get("hypercolumn_blocks", 1)
    if hypercolumn_blocks == 1:
      feature_map, stats = self.backbone(backbone_params, backbone_stats, grey, train=train, method="feature_map")
      logits, _ = self.colour_head(params["colour_head"], {}, feature_map, train=train)
      scale = (cells // logits.shape[1], cells // logits.shape[2])
      logits = jnp.repeat(jnp.repeat(logits, scale[0], axis=1), scale[1], axis=2)  # nearest upsampling
    else:
      blocks, stats = self.backbone(backbone_params, backbone_stats, grey, train=train, method="block_outputs", last=hypercolumn_blocks)
      feature_map = blocks[-1]
      logits, _ = self.colour_head(params["colour_head"], {}, blocks, cells, train=train)
    return logits, feature_map.mean(axis=(1, 2)), stats

  def loss(self, params, extra, batch, rng, step):
    del step
    cfg = self.config.colorization
    rgb = augment.augment_images(rng, batch["view0"], self.view_specs[0])
    logits, features, stats = self.predict(params, extra, rgb, train=True)
    if self.head == "larsson":
      colour_loss = larsson_loss(logits, cell_centres(rgb, cfg.target_cells))
      return self._with_probe(params, colour_loss, {"colour_loss": colour_loss}, features, batch, stats, jnp.zeros_like(extra["colour_counts"]))
    bins = jnp.asarray(self.bins)
    lab = colour.srgb_to_lab(rgb)
    indices, soft_weights = colour.nearest_bins(cell_centres(lab, cfg.target_cells)[..., 1:], bins, cfg.neighbours, cfg.sigma)
    nearest = indices[..., 0]  # [B, c, c]
    counts = jax.nn.one_hot(nearest, len(self.bins)).sum(axis=(0, 1, 2))
    seen = extra["colour_counts"] + counts
    prior = colour.smooth_prior(seen / jnp.sum(seen), bins, cfg.get("prior_sigma", 0.0))
    weights = colour.rebalancing_weights(prior, cfg.rebalance_mix)
    coloured = jnp.max(jnp.abs(lab[..., 1:]), axis=(1, 2, 3)) > GREY_THRESHOLD  # [B]
    pixel_weight = jax.lax.stop_gradient(weights[nearest]) * coloured[:, None, None]
    # -sum_q Z_q log p_q with the soft target Z read at its nonzero bins only.
    log_probabilities = jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32)), indices, axis=-1)
    cross_entropy = -jnp.sum(soft_weights * log_probabilities, axis=-1)
    colour_loss = jnp.sum(pixel_weight * cross_entropy) / jnp.maximum(jnp.sum(coloured) * cfg.target_cells**2, 1.0)
    metrics = {"colour_loss": colour_loss, "colour_top1": jnp.mean(jnp.argmax(logits, -1) == nearest)}
    return self._with_probe(params, colour_loss, metrics, features, batch, stats, counts)

  def _with_probe(self, params, colour_loss, metrics, features, batch, stats, counts):
    total = colour_loss
    if self.num_classes:
      probe_loss, probe_accuracy = linear_probe_loss(self.probe, params["probe"], features, batch["label"])
      total = total + probe_loss
      metrics.update(probe_loss=probe_loss, probe_top1=probe_accuracy)
    return total, {"batch_stats": {"backbone": stats}, "colour_counts": counts, "metrics": metrics}

  def after_update(self, state: TrainState, aux: dict) -> dict:
    return {"batch_stats": aux["batch_stats"], "colour_counts": state.extra["colour_counts"] + aux["colour_counts"]}

  def embed(self, params, extra, images, *, train: bool = False):
    features, _ = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], self.backbone_input_fn(self.config)(images), train=train)
    return features

  def colorize(self, params, extra, rgb: jax.Array) -> jax.Array:
    """RGB in [0, 1] -> the network's colouring of its lightness (annealed mean, nearest-upsampled to
    the image): what plots/colorizations.png shows."""
    logits, _, _ = self.predict(params, extra, rgb, train=False)
    if self.head == "larsson":
      repeat = rgb.shape[1] // logits.shape[1]
      logits = jnp.repeat(jnp.repeat(logits, repeat, axis=1), repeat, axis=2)
      return larsson_decode(logits, rgb.mean(axis=-1))
    ab = colour.annealed_mean(logits, jnp.asarray(self.bins), self.config.colorization.annealed_temperature)
    repeat = rgb.shape[1] // ab.shape[1]
    ab = jnp.repeat(jnp.repeat(ab, repeat, axis=1), repeat, axis=2)
    lightness = colour.srgb_to_lab(rgb)[..., :1]
    return colour.lab_to_srgb(jnp.concatenate([lightness, ab], axis=-1))

  sample_columns = ("lightness (input)", "colorized", "original")  # plots/samples.png, left to right

  def sample_grid(self, params, extra, images: jax.Array) -> dict[str, jax.Array]:
    """Columns of plots/samples.png: the lightness the network sees, its colouring, the original."""
    rgb = augment.to_float_image(images)
    grey = (self.network_input(rgb) + 1.0) / 2.0  # both inputs lie in [-1, 1]
    return {"lightness (input)": grey, "colorized": self.colorize(params, extra, rgb), "original": rgb}
