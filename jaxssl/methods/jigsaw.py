"""Jigsaw puzzles (Noroozi & Favaro 2016) and DeepPermNet (Santa Cruz et al. 2017).

An image is cut into a 3x3 grid of tiles (each at a random offset inside its cell, so gaps and
jitter hide the edges), the tiles are shuffled, and the network must say how. A shared tile
encoder (the backbone, "context-free": each tile alone) embeds every tile; the tiles' features
are concatenated in their shuffled order and a head predicts the shuffle:

* `jigsaw.head = 'classification'` (Noroozi & Favaro): the shuffle is one of a fixed set of
  `jigsaw.num_permutations` permutations chosen far apart in Hamming distance
  (`pretext.hamming_permutation_set`; 100 and 1000 as in the paper), and the head is a
  classifier over the set;
* `jigsaw.head = 'sinkhorn'` (DeepPermNet): the shuffle is any of the 9! permutations (the
  official code draws uniformly from all of them), the head outputs 9 x 9 scores, a softmax over
  all 81 and Sinkhorn normalisation make them a (nearly) doubly-stochastic matrix S, and the
  loss is the cross-entropy against the true permutation matrix: -sum_{j} log S[j, pi(j)] / B.

Head (official CFN / DeepPermNet): fc6 per tile (`jigsaw.tile_dim`; 1024 and 512), ReLU,
concatenated, fc7 (`jigsaw.hidden_dim`; 4096), ReLU, fc8. Evaluation embeds whole images with
the tile encoder.
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

HEADS = ("classification", "sinkhorn")
NUM_TILES = 9  # a 3 x 3 grid


class PuzzleHead(nnx.Module):
  """fc6 on each tile's features, ReLU, concatenation in puzzle order, fc7, ReLU, fc8."""

  def __init__(self, in_features: int, tile_features: int, hidden_features: int, out_features: int, *, rngs: nnx.Rngs):
    self.fc6 = nnx.Linear(in_features, tile_features, rngs=rngs)
    self.fc7 = nnx.Linear(NUM_TILES * tile_features, hidden_features, rngs=rngs)
    self.fc8 = nnx.Linear(hidden_features, out_features, rngs=rngs)

  def __call__(self, tile_features: jax.Array) -> jax.Array:
    """[B, 9, D] -> [B, out_features]."""
    x = nnx.relu(self.fc6(tile_features))
    x = nnx.relu(self.fc7(x.reshape(x.shape[0], -1)))
    return self.fc8(x)


class Jigsaw:
  """Jigsaw / DeepPermNet as pure functions; see the module docstring."""

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0):
    self.config = config
    self.num_classes = num_classes
    cfg = config.jigsaw
    if cfg.head not in HEADS:
      raise ValueError(f"config.jigsaw.head '{cfg.head}' is not known; choose one of {HEADS}.")
    self.view_specs = tuple(augment.spec_from_config(c) for c in config.augment.views)
    if cfg.head == "classification":
      self.permutations = jnp.asarray(pretext.hamming_permutation_set(cfg.num_permutations, NUM_TILES, cfg.permutation_selection, cfg.permutation_seed))
    abstract = nnx.eval_shape(lambda: self._networks(nnx.Rngs(0)))
    self.backbone, self.head, self.probe = (functional.split_module(m)[0] for m in abstract)

  def _networks(self, rngs: nnx.Rngs) -> tuple[nnx.Module, ...]:
    cfg = self.config.jigsaw
    backbone = models.make_backbone(self.config.model, rngs)
    outputs = cfg.num_permutations if cfg.head == "classification" else NUM_TILES * NUM_TILES
    head = PuzzleHead(backbone.num_features, cfg.tile_dim, cfg.hidden_dim, outputs, rngs=rngs)
    probe = nnx.Linear(backbone.num_features, max(self.num_classes, 1), rngs=rngs)
    return backbone, head, probe

  def init(self, rng: jax.Array) -> tuple[dict, dict]:
    names = ("backbone", "head", "probe")
    _, params, stats = zip(*(functional.split_module(m) for m in self._networks(nnx.Rngs(rng))))
    params = dict(zip(names, params))
    if not self.num_classes:
      del params["probe"]
    return params, {"batch_stats": {"backbone": stats[0]}}

  def make_puzzles(self, rng: jax.Array, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(shuffled tiles [B, 9, t, t, C], permutations [B, 9]) of augmented, normalised images."""
    cfg = self.config.jigsaw
    tile_rng, permutation_rng = jax.random.split(rng)
    tiles = pretext.puzzle_tiles(tile_rng, images, cfg.tile_size)
    if cfg.normalize_tiles:
      tiles = pretext.normalize_each_tile(tiles)
    if cfg.head == "classification":
      labels = jax.random.randint(permutation_rng, (images.shape[0],), 0, cfg.num_permutations)
      permutations = self.permutations[labels]
    else:
      keys = jax.random.split(permutation_rng, images.shape[0])
      permutations = jax.vmap(lambda k: jax.random.permutation(k, NUM_TILES))(keys).astype(jnp.int32)
      labels = permutations
    return pretext.shuffle_tiles(tiles, permutations), labels

  def puzzle_loss(self, logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(loss, accuracy): cross-entropy over the permutation set, or DeepPermNet's against the
    permutation matrix after Sinkhorn normalisation (accuracy: tiles placed right)."""
    cfg = self.config.jigsaw
    if cfg.head == "classification":
      return losses.softmax_cross_entropy(logits, labels), jnp.mean(logits.argmax(-1) == labels)
    scores = jax.nn.softmax(logits.astype(jnp.float32)).reshape(-1, NUM_TILES, NUM_TILES)  # one softmax over all 81
    doubly_stochastic = pretext.sinkhorn_normalize(scores, cfg.sinkhorn_iterations, cfg.sinkhorn_epsilon)
    target = pretext.permutation_matrices(labels)
    loss = -jnp.sum(target * jnp.log(doubly_stochastic)) / labels.shape[0]
    return loss, jnp.mean(doubly_stochastic.argmax(-1) == labels)

  def loss(self, params, extra, batch, rng, step):
    del step
    view_rng, puzzle_rng = jax.random.split(rng)
    images = augment.normalize(augment.augment_images(view_rng, batch["view0"], self.view_specs[0]))
    tiles, labels = self.make_puzzles(puzzle_rng, images)
    batch_size = images.shape[0]
    features, backbone_stats = self.backbone(
        params["backbone"], extra["batch_stats"]["backbone"], tiles.reshape(-1, *tiles.shape[2:]), train=True
    )
    logits, _ = self.head(params["head"], {}, features.reshape(batch_size, NUM_TILES, -1), train=True)
    puzzle_loss, accuracy = self.puzzle_loss(logits, labels)
    metrics = {"jigsaw_loss": puzzle_loss, "jigsaw_top1": accuracy}
    total = puzzle_loss
    if self.num_classes:
      # The probe learns on whole images, as evaluation embeds them (no gradient reaches the backbone).
      whole = self.embed(params, extra, images)
      probe_loss, probe_accuracy = linear_probe_loss(self.probe, params["probe"], whole, batch["label"])
      total = total + probe_loss
      metrics.update(probe_loss=probe_loss, probe_top1=probe_accuracy)
    return total, {"batch_stats": {"backbone": backbone_stats}, "metrics": metrics}

  def after_update(self, state: TrainState, aux: dict) -> dict:
    del state
    return {"batch_stats": aux["batch_stats"]}

  @classmethod
  def backbone_input_fn(cls, config: ml_collections.ConfigDict):
    """Normalised images -> the backbone's input: normalised as the tiles were (per image and
    channel) when `jigsaw.normalize_tiles`, in evaluation and in `jaxssl.evaluation.pretrained`."""
    return pretext.normalize_each_tile if config.jigsaw.normalize_tiles else (lambda images: images)

  def embed(self, params, extra, images, *, train: bool = False):
    features, _ = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], self.backbone_input_fn(self.config)(images), train=train)
    return features
