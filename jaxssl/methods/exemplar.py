"""Exemplar CNN (Dosovitskiy, Springenberg, Riedmiller, Brox 2014, "Discriminative Unsupervised
Feature Learning with Convolutional Neural Networks").

Every training image is its own surrogate class. Each step shows heavily transformed versions of
the batch's images (crops at several scales and positions, flips, colour changes), and a
parametric softmax classifier over all N images must name the image each came from:

  L = 1 / B sum_i -log softmax(W f(T(x_i)) + b)_{index(i)},   W: [N, D], one row per image.

Unlike NPID's memory bank, the class weights W are parameters trained by the gradient. They grow
with the dataset (1.28M rows on ImageNet), so they are split over devices by rows
(`row_sharded_params`), as is their optimizer state; the global batch's features meet every
device's rows inside the jitted step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxssl import losses, models
from jaxssl.methods import dictionaries
from jaxssl.methods.base import TrainState
from jaxssl.methods.common import embedding_std, linear_probe_loss, view_images
from jaxssl.methods.moco import ProjectionHead
from jaxssl.models import functional
from jaxssl.transforms import augment


class Exemplar:
  """Exemplar CNN as pure functions; see the module docstring."""

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0, num_train_examples: int = 0):
    self.config = config
    self.num_classes = num_classes
    self.num_exemplars = dictionaries.memory_bank_size(config.exemplar.num_exemplars, num_train_examples)
    self.view_specs = tuple(augment.spec_from_config(c) for c in config.augment.views)
    abstract = nnx.eval_shape(lambda: self._networks(nnx.Rngs(0)))
    self.backbone, self.head, self.probe = (functional.split_module(m)[0] for m in abstract)

  def _networks(self, rngs: nnx.Rngs) -> tuple[nnx.Module, ...]:
    cfg = self.config.model
    backbone = models.make_backbone(cfg, rngs)
    # The paper's fully connected layer before the softmax (`model.head_hidden_dim`: a hidden
    # layer with BN, as NPID's CPU presets; 0: one linear layer).
    head = ProjectionHead(
        backbone.num_features, cfg.get("head_hidden_dim", 0), cfg.projection_dim,
        batch_norm=cfg.get("head_batch_norm", False), dtype=models.compute_dtype(cfg.dtype), rngs=rngs,
    )
    probe = nnx.Linear(backbone.num_features, max(self.num_classes, 1), rngs=rngs)
    return backbone, head, probe

  def init(self, rng: jax.Array) -> tuple[dict, dict]:
    network_rng, classifier_rng = jax.random.split(rng)
    names = ("backbone", "head", "probe")
    _, params, stats = zip(*(functional.split_module(m) for m in self._networks(nnx.Rngs(network_rng))))
    params = dict(zip(names, params))
    if not self.num_classes:
      del params["probe"]
    dim = self.config.model.projection_dim
    # One row per exemplar, initialised as a Linear layer's kernel (lecun normal), zero bias.
    params["classifier"] = {
        "weight": jax.random.normal(classifier_rng, (self.num_exemplars, dim), jnp.float32) / jnp.sqrt(dim),
        "bias": jnp.zeros((self.num_exemplars,), jnp.float32),
    }
    return params, {"batch_stats": {"backbone": stats[0], "head": stats[1]}}

  row_sharded_params = (("classifier",),)

  def loss(self, params, extra, batch, rng, step):
    del step
    indices = dictionaries.check_indices(batch, "Exemplar")
    (images,) = view_images(rng, (batch["view0"],), self.view_specs[:1])
    stats = extra["batch_stats"]
    features, backbone_stats = self.backbone(params["backbone"], stats["backbone"], images, train=True)
    projection, head_stats = self.head(params["head"], stats["head"], features, train=True)
    classifier = params["classifier"]
    logits = projection.astype(jnp.float32) @ classifier["weight"].T + classifier["bias"]
    exemplar_loss = losses.softmax_cross_entropy(logits, indices)
    metrics = {"exemplar_loss": exemplar_loss, "exemplar_top1": jnp.mean(logits.argmax(-1) == indices), "embedding_std": embedding_std(projection)}
    total = exemplar_loss
    if self.num_classes:
      probe_loss, probe_accuracy = linear_probe_loss(self.probe, params["probe"], features, batch["label"])
      total = total + probe_loss
      metrics.update(probe_loss=probe_loss, probe_top1=probe_accuracy)
    return total, {"batch_stats": {"backbone": backbone_stats, "head": head_stats}, "metrics": metrics}

  def after_update(self, state: TrainState, aux: dict) -> dict:
    del state
    return {"batch_stats": aux["batch_stats"]}

  def embed(self, params, extra, images, *, train: bool = False):
    features, _ = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], images, train=train)
    return features
