"""Transitive invariance (Wang, He, Gupta 2017, "Transitive Invariance for Self-supervised Visual
Representation Learning").

Two kinds of edges join images that should have similar features:

* intra-instance edges: two views of one instance (the paper tracks a patch through a video;
  here two augmentations of one image);
* inter-instance edges: different instances that look alike (the paper links nearest neighbours
  in the feature space of a first network; here each image's nearest neighbour among the other
  images of the global batch, in the current embedding, stop-gradient).

Transitivity adds the pairs the two kinds imply together: if a and b are neighbours and b' is
another view of b, then a ~ b' (and a' ~ b, a' ~ b' for a view a' of a). `transitive_pairs`
composes the two edge sets on the graph of the 2B views of the batch. Every positive pair (a, p)
then enters the paper's triplet ranking loss with a negative n from the views of an image linked
to neither (`transitive.negatives` 'all': every such view of the batch, the hinges averaged),
drawn at random (`transitive.hard_negative_start_step` >= 0 switches to the hardest
such view in the batch from that step, as Wang & Gupta 2015, whose triplet setup the paper
follows; on the CPU preset it collapsed the embedding, see configs/transitive_invariance.py),

  L = mean_{(a,p)} max(0, D(a, p) - D(a, n) + m),   D(x, y) = 1 - cos(x, y),  m = 0.5 (paper).

The paper builds its graph over the whole dataset once, offline, from a network already trained
on the intra-instance edges (tracking); the graph here is rebuilt from the network being trained
at every step over the global batch (so under `jit` it spans every device's images), which needs
no pass over the data, at the cost of neighbours drawn from B images rather than N. As in the
paper, the inter-instance and transitive pairs join only once the network has learned from the
intra-instance edges alone (`transitive.graph_start_step`): the neighbours of a random network
share a label no more often than chance (measured: 7-15% for 10 classes over the first 340 steps
of `:quick` with the graph on from step 0, kNN 14.0 at step 300).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxssl import losses, models
from jaxssl.errors import UserError
from jaxssl.methods.base import TrainState
from jaxssl.methods.common import embedding_std, linear_probe_loss, view_images
from jaxssl.models import functional
from jaxssl.models.heads import MLPHead
from jaxssl.transforms import augment


def nearest_neighbours(embeddings: jax.Array) -> jax.Array:
  """Index of each row's most cosine-similar other row: [N, D] -> [N]."""
  unit = losses.l2_normalize(embeddings)
  similarity = unit @ unit.T
  return jnp.argmax(jnp.where(jnp.eye(len(unit), dtype=bool), -jnp.inf, similarity), axis=-1)


def transitive_pairs(intra: jax.Array, inter: jax.Array) -> jax.Array:
  """Pairs implied by one intra-instance and one inter-instance edge, in either order.

  Args:
    intra, inter: [N, N] symmetric boolean adjacency matrices over the same N nodes.

  Returns:
    [N, N] boolean: a ~ c whenever a - b is one kind of edge and b - c the other, except
    self-pairs and pairs that are already edges.
  """
  as_int = lambda a: a.astype(jnp.int32)
  composed = (as_int(intra) @ as_int(inter) + as_int(inter) @ as_int(intra)) > 0
  return composed & ~intra & ~inter & ~jnp.eye(len(intra), dtype=bool)


def view_graph(neighbours: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(intra, inter) adjacency over the 2B views [view 0 of images 0..B-1, view 1 of them] when
  image i's neighbour is image neighbours[i]: intra joins the two views of an image, inter joins
  the first views of neighbouring images (both directions)."""
  batch = len(neighbours)
  image = jnp.arange(2 * batch) % batch
  intra = (image[:, None] == image[None, :]) & ~jnp.eye(2 * batch, dtype=bool)
  first_view = jnp.arange(2 * batch) < batch
  linked = neighbours[image][:, None] == image[None, :]
  inter = (linked | linked.T) & first_view[:, None] & first_view[None, :] & (image[:, None] != image[None, :])
  return intra, inter


def triplet_ranking_loss(embeddings: jax.Array, positives: jax.Array, negatives: jax.Array, margin: float) -> jax.Array:
  """mean over positive pairs (a, p) of max(0, D(a, p) - D(a, n) + margin), D = 1 - cosine.

  Args:
    embeddings: [N, D]; positives: [N, N] boolean.
    negatives: [N], the one negative of each anchor (the paper's triplets); or [N, N] boolean,
      every negative of each anchor, whose hinges are averaged per positive pair (a triplet
      for every negative in the batch).
  """
  unit = losses.l2_normalize(embeddings)
  distance = 1.0 - unit @ unit.T
  if negatives.ndim == 1:
    hinge = jax.nn.relu(distance - jnp.take_along_axis(distance, negatives[:, None], axis=1) + margin)  # [a, p]
  else:
    every = jax.nn.relu(distance[:, :, None] - distance[:, None, :] + margin)  # [a, p, n]
    count = jnp.maximum(jnp.sum(negatives, axis=1), 1)[:, None]
    hinge = jnp.sum(jnp.where(negatives[:, None, :], every, 0.0), axis=-1) / count
  return jnp.sum(jnp.where(positives, hinge, 0.0)) / jnp.maximum(jnp.sum(positives), 1)


def sample_negatives(rng: jax.Array, related: jax.Array) -> jax.Array:
  """For each node, a uniformly drawn node it is not related to ([N, N] boolean, the diagonal
  counted as related)."""
  scores = jax.random.uniform(rng, related.shape)
  return jnp.argmax(jnp.where(related | jnp.eye(len(related), dtype=bool), -1.0, scores), axis=-1)


def hardest_negatives(embeddings: jax.Array, related: jax.Array) -> jax.Array:
  """For each node, the most cosine-similar node it is not related to (stop-gradient choice)."""
  unit = losses.l2_normalize(jax.lax.stop_gradient(embeddings))
  similarity = unit @ unit.T
  return jnp.argmax(jnp.where(related | jnp.eye(len(related), dtype=bool), -jnp.inf, similarity), axis=-1)


class TransitiveInvariance:
  """Transitive invariance as pure functions; see the module docstring."""

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0):
    self.config = config
    self.num_classes = num_classes
    if config.transitive.margin <= 0:
      raise UserError(f"config.transitive.margin must be positive, got {config.transitive.margin}; the paper uses 0.5.")
    if config.batch_size < 3:
      raise UserError(f"config.batch_size={config.batch_size} leaves no negative image; use at least 3 (each image needs a neighbour and an unrelated image).")
    if config.transitive.negatives not in ("one", "all"):
      raise UserError(f"config.transitive.negatives is '{config.transitive.negatives}'; choose 'one' (the paper's triplets) or 'all' (every unrelated view in the batch).")
    if len(config.augment.views) != 2:
      raise UserError(f"Transitive invariance compares two views of each image; config.augment.views has {len(config.augment.views)}, give it 2.")
    self.view_specs = tuple(augment.spec_from_config(c) for c in config.augment.views)
    abstract = nnx.eval_shape(lambda: self._networks(nnx.Rngs(0)))
    self.backbone, self.projector, self.probe = (functional.split_module(m)[0] for m in abstract)

  def _networks(self, rngs: nnx.Rngs) -> tuple[nnx.Module, ...]:
    """(backbone, projector, probe); the paper's embedding is fc layers on conv5 (1024-d)."""
    cfg = self.config.model
    backbone = models.make_backbone(cfg, rngs)
    projector = MLPHead(backbone.num_features, cfg.projector_hidden_dim, cfg.projection_dim, dtype=models.compute_dtype(cfg.dtype), rngs=rngs)
    probe = nnx.Linear(backbone.num_features, max(self.num_classes, 1), rngs=rngs)
    return backbone, projector, probe

  def init(self, rng: jax.Array) -> tuple[dict, dict]:
    names = ("backbone", "projector", "probe")
    _, params, stats = zip(*(functional.split_module(m) for m in self._networks(nnx.Rngs(rng))))
    params, stats = dict(zip(names, params)), dict(zip(names, stats))
    del stats["probe"]
    if not self.num_classes:
      del params["probe"]
    return params, {"batch_stats": stats}

  def loss(self, params, extra, batch, rng, step):
    cfg = self.config.transitive
    view_rng, negative_rng = jax.random.split(rng)
    view0, view1 = view_images(view_rng, (batch["view0"], batch["view1"]), self.view_specs)
    batch_size = view0.shape[0]
    stats = extra["batch_stats"]
    features, backbone_stats = self.backbone(params["backbone"], stats["backbone"], jnp.concatenate([view0, view1]), train=True)
    embeddings, projector_stats = self.projector(params["projector"], stats["projector"], features, train=True)
    neighbours = nearest_neighbours(jax.lax.stop_gradient(embeddings[:batch_size]))
    intra, inter = view_graph(neighbours)
    transitive = transitive_pairs(intra, inter)
    graph_on = jnp.asarray(step >= cfg.graph_start_step, jnp.float32)
    weights = {"intra": cfg.intra_weight, "inter": cfg.inter_weight * graph_on, "transitive": cfg.transitive_weight * graph_on}
    edges = {"intra": intra, "inter": inter, "transitive": transitive}
    related = intra | inter | transitive
    negatives = sample_negatives(negative_rng, related)
    if cfg.negatives == "all":
      negatives = ~related & ~jnp.eye(len(related), dtype=bool)
    elif cfg.hard_negative_start_step >= 0:
      # Wang & Gupta (2015), whose triplet setup the paper follows: random negatives first, then
      # the hardest unrelated view in the batch (hard negative mining).
      negatives = jnp.where(step >= cfg.hard_negative_start_step, hardest_negatives(embeddings, related), negatives)
    per_kind = {kind: triplet_ranking_loss(embeddings, edges[kind], negatives, cfg.margin) for kind in edges}
    total = sum(weights[kind] * per_kind[kind] for kind in edges)
    metrics = {f"{kind}_loss": value for kind, value in per_kind.items()}
    metrics.update(
        triplet_loss=total,
        embedding_std=embedding_std(embeddings),
        transitive_pairs_per_view=jnp.sum(transitive) / (2 * batch_size),
    )
    if self.num_classes:
      probe_loss, probe_accuracy = linear_probe_loss(self.probe, params["probe"], features[:batch_size], batch["label"])
      # How often the in-batch neighbour shares the image's label: the inter edges' precision.
      metrics.update(probe_loss=probe_loss, probe_top1=probe_accuracy, neighbour_same_label=jnp.mean(jnp.asarray(batch["label"])[neighbours] == batch["label"]))
      total = total + probe_loss
    return total, {"batch_stats": {"backbone": backbone_stats, "projector": projector_stats}, "metrics": metrics}

  def after_update(self, state: TrainState, aux: dict) -> dict:
    del state
    return {"batch_stats": aux["batch_stats"]}

  def embed(self, params, extra, images, *, train: bool = False):
    features, _ = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], images, train=train)
    return features
