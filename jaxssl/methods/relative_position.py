"""Relative position / context prediction (Doersch, Gupta, Efros 2015), with the counter-measures
of "Improvements to context based self-supervised learning" (Mundhenk, Ho, Chen 2018).

An image is cut into a 3 x 3 grid of patches, each at a random offset inside its cell (a gap
and jitter, so edges and lines cannot be continued across patches). The centre patch is paired
with each of its 8 neighbours (mmselfsup's pairs) and a classifier on the two patches' features
names where the neighbour sits (8 classes). The backbone embeds each patch alone; the pair's
features are concatenated, then fc7 (BN, ReLU) and the 8-way fc8.

Shortcuts the network would otherwise take, and the switches (`config.relative_position`) that
close them:
* chromatic aberration, which shifts colour channels toward the image's edges:
  `colour = 'drop'` (one channel kept, the others noise: the official code), `'project'`
  (green-magenta removed: the paper's projection) or `'none'`; `chroma_blur_sigma` > 0 blurs
  the colour, not the brightness (Mundhenk);
* edge continuity: `patch_size` < the cell (gaps) with a random offset per patch, or one offset
  for all of an image's patches (`yoked_jitter`, Mundhenk's joint jitter);
* a patch's border: `aperture_probability` keeps a random window of the patch (Mundhenk);
* `rotation_loss_weight` > 0: each image is also turned by a random multiple of 90 degrees
  before it is cut, and a 4-way head on the pair predicts the turn (Mundhenk's rotation with
  classification); positions are then counted in the turned image.
Each patch is normalised on its own (the official code RMS-normalises each patch).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxssl import losses, models
from jaxssl.methods.base import TrainState
from jaxssl.methods.common import linear_probe_loss
from jaxssl.models import functional
from jaxssl.transforms import augment, pretext
from jaxssl.models.normalization import batch_norm

COLOUR_HANDLING = ("none", "drop", "project")


class PairHead(nnx.Module):
  """fc7 (BN, ReLU) over the two patches' concatenated features, then the position classifier
  fc8 and, optionally, the rotation classifier."""

  def __init__(self, in_features: int, hidden_features: int, *, rotation: bool, rngs: nnx.Rngs):
    self.fc7 = nnx.Linear(2 * in_features, hidden_features, rngs=rngs)
    self.norm = batch_norm(hidden_features, rngs=rngs)
    self.position = nnx.Linear(hidden_features, len(pretext.NEIGHBOURS), rngs=rngs)
    self.rotation = nnx.Linear(hidden_features, pretext.NUM_ROTATIONS, rngs=rngs) if rotation else None

  def __call__(self, pairs: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    hidden = nnx.relu(self.norm(self.fc7(pairs)))
    return self.position(hidden), (self.rotation(hidden) if self.rotation is not None else None)


class RelativePosition:
  """Context prediction as pure functions; see the module docstring."""

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0):
    self.config = config
    self.num_classes = num_classes
    if config.relative_position.colour not in COLOUR_HANDLING:
      raise ValueError(f"config.relative_position.colour '{config.relative_position.colour}' is not known; choose one of {COLOUR_HANDLING}.")
    self.view_specs = tuple(augment.spec_from_config(c) for c in config.augment.views)
    abstract = nnx.eval_shape(lambda: self._networks(nnx.Rngs(0)))
    self.backbone, self.head, self.probe = (functional.split_module(m)[0] for m in abstract)

  def _networks(self, rngs: nnx.Rngs) -> tuple[nnx.Module, ...]:
    cfg = self.config.relative_position
    backbone = models.make_backbone(self.config.model, rngs)
    head = PairHead(backbone.num_features, cfg.hidden_dim, rotation=cfg.rotation_loss_weight > 0, rngs=rngs)
    probe = nnx.Linear(backbone.num_features, max(self.num_classes, 1), rngs=rngs)
    return backbone, head, probe

  def init(self, rng: jax.Array) -> tuple[dict, dict]:
    names = ("backbone", "head", "probe")
    _, params, stats = zip(*(functional.split_module(m) for m in self._networks(nnx.Rngs(rng))))
    params = dict(zip(names, params))
    if not self.num_classes:
      del params["probe"]
    return params, {"batch_stats": {"backbone": stats[0], "head": stats[1]}}

  def make_patches(self, rng: jax.Array, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(patches [B, 9, p, p, C], normalised one by one, and each image's turn [B]) from [0, 1] images."""
    cfg = self.config.relative_position
    turn_rng, tile_rng, colour_rng, aperture_rng = jax.random.split(rng, 4)
    turns = jnp.zeros((images.shape[0],), jnp.int32)
    if cfg.rotation_loss_weight > 0:
      turns = jax.random.randint(turn_rng, (images.shape[0],), 0, pretext.NUM_ROTATIONS)
      images = pretext.rotate_each(images, turns)
    patches = pretext.puzzle_tiles(tile_rng, images, cfg.patch_size, shared_offset=cfg.yoked_jitter)
    flat = patches.reshape(-1, *patches.shape[2:])
    if cfg.chroma_blur_sigma > 0:
      flat = pretext.blur_chroma(flat, cfg.chroma_blur_sigma)
    if cfg.colour == "drop":
      flat = pretext.drop_colour(colour_rng, flat)
    elif cfg.colour == "project":
      flat = pretext.project_out_green_magenta(flat)
    flat = pretext.normalize_each_tile(flat, min_std=0.02)  # in [0, 1] units: about 5 grey levels
    if cfg.aperture_probability > 0:
      flat = pretext.random_aperture(aperture_rng, flat, cfg.aperture_probability)
    return flat.reshape(patches.shape), turns

  def loss(self, params, extra, batch, rng, step):
    del step
    cfg = self.config.relative_position
    view_rng, patch_rng = jax.random.split(rng)
    images = augment.augment_images(view_rng, batch["view0"], self.view_specs[0])  # [0, 1]
    patches, turns = self.make_patches(patch_rng, images)
    batch_size, num_tiles = patches.shape[:2]
    stats = extra["batch_stats"]
    features, backbone_stats = self.backbone(params["backbone"], stats["backbone"], patches.reshape(-1, *patches.shape[2:]), train=True)
    centres, neighbours, labels = pretext.centre_neighbour_pairs(features.reshape(batch_size, num_tiles, -1))
    pairs = jnp.concatenate([jnp.broadcast_to(centres[:, None], neighbours.shape), neighbours], axis=-1)
    (position_logits, rotation_logits), head_stats = self.head(params["head"], stats["head"], pairs.reshape(-1, pairs.shape[-1]), train=True)
    labels = labels.reshape(-1)
    position_loss = losses.softmax_cross_entropy(position_logits, labels)
    metrics = {"position_loss": position_loss, "position_top1": jnp.mean(position_logits.argmax(-1) == labels)}
    total = position_loss
    if rotation_logits is not None:
      pair_turns = jnp.repeat(turns, len(pretext.NEIGHBOURS))
      rotation_loss = losses.softmax_cross_entropy(rotation_logits, pair_turns)
      total = total + cfg.rotation_loss_weight * rotation_loss
      metrics.update(rotation_loss=rotation_loss, rotation_top1=jnp.mean(rotation_logits.argmax(-1) == pair_turns))
    if self.num_classes:
      whole = self.embed(params, extra, augment.normalize(images))
      probe_loss, probe_accuracy = linear_probe_loss(self.probe, params["probe"], whole, batch["label"])
      total = total + probe_loss
      metrics.update(probe_loss=probe_loss, probe_top1=probe_accuracy)
    return total, {"batch_stats": {"backbone": backbone_stats, "head": head_stats}, "metrics": metrics}

  def after_update(self, state: TrainState, aux: dict) -> dict:
    del state
    return {"batch_stats": aux["batch_stats"]}

  @classmethod
  def backbone_input_fn(cls, config: ml_collections.ConfigDict):
    """Normalised images -> the backbone's input: whole images normalised as the patches were
    (per image and channel), in evaluation and in `jaxssl.evaluation.pretrained`."""
    del config
    return pretext.normalize_each_tile

  def embed(self, params, extra, images, *, train: bool = False):
    features, _ = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], self.backbone_input_fn(self.config)(images), train=train)
    return features
