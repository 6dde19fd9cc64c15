"""SimCLR: a Simple framework for Contrastive Learning of visual Representations (Chen et al. 2020).

An encoder f and an MLP projector g map two augmented views of each image to z = g(f(v)); the
NT-Xent loss pulls the two views of an image together and pushes them away from the 2B - 2 other
views of the GLOBAL batch:

  L = 1 / 2B sum_i -log( exp(s_i,pos(i)) / sum_{j != i} exp(s_ij) ),  s_ij = cos(z_i, z_j) / tau.

The paper needs a cross-replica all-gather of z and cross-replica ("global") BatchNorm; under a
sharded `jax.jit` both come from writing the loss and the forward pass on the global batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxssl import losses, models
from jaxssl.transforms import augment
from jaxssl.methods.base import TrainState
from jaxssl.methods.common import embedding_std, linear_probe_loss, view_images
from jaxssl.models import functional
from jaxssl.models.heads import MLPHead


class SimCLR:
  """SimCLR as pure functions; see the module docstring for the equation."""

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0):
    self.config = config
    self.num_classes = num_classes
    if config.simclr.temperature <= 0:
      raise ValueError(f"config.simclr.temperature must be positive, got {config.simclr.temperature}; the paper uses 0.1-0.5.")
    self.view_specs = tuple(augment.spec_from_config(c) for c in config.augment.views)
    abstract = nnx.eval_shape(lambda: self._networks(nnx.Rngs(0)))
    self.backbone, self.projector, self.probe = (functional.split_module(m)[0] for m in abstract)

  def _networks(self, rngs: nnx.Rngs) -> tuple[nnx.Module, ...]:
    """(backbone, projector, probe); the paper's projector is Linear-BN-ReLU-Linear, 2048 -> 128."""
    cfg = self.config.model
    backbone = models.make_backbone(cfg, rngs)
    projector = MLPHead(
        backbone.num_features,
        cfg.projector_hidden_dim,
        cfg.projection_dim,
        num_hidden_layers=cfg.projector_num_layers - 1,
        dtype=models.compute_dtype(cfg.dtype),
        rngs=rngs,
    )
    probe = nnx.Linear(backbone.num_features, max(self.num_classes, 1), rngs=rngs)
    return backbone, projector, probe

  def init(self, rng: jax.Array) -> tuple[dict, dict]:
    names = ("backbone", "projector", "probe")
    _, params, stats = zip(*(functional.split_module(m) for m in self._networks(nnx.Rngs(rng))))
    params, stats = dict(zip(names, params)), dict(zip(names, stats))
    del stats["probe"]  # a Linear layer has no batch statistics
    if not self.num_classes:
      del params["probe"]
    return params, {"batch_stats": stats}

  def loss(self, params, extra, batch, rng, step):
    del step
    view1, view2 = view_images(rng, (batch["view0"], batch["view1"]), self.view_specs)
    batch_size = view1.shape[0]
    stats = extra["batch_stats"]
    # One forward pass over both views, as the official code does: BatchNorm statistics are those
    # of all 2B views of the global batch.
    features, stats_backbone = self.backbone(params["backbone"], stats["backbone"], jnp.concatenate([view1, view2]), train=True)
    projections, stats_projector = self.projector(params["projector"], stats["projector"], features, train=True)
    z1, z2 = projections[:batch_size], projections[batch_size:]
    loss = losses.nt_xent_loss(z1, z2, self.config.simclr.temperature)
    metrics = {"nt_xent_loss": loss, "embedding_std": embedding_std(z1)}
    total = loss
    if self.num_classes:
      probe_loss, probe_accuracy = linear_probe_loss(self.probe, params["probe"], features[:batch_size], batch["label"])
      total = total + probe_loss
      metrics.update(probe_loss=probe_loss, probe_top1=probe_accuracy)
    aux = {"batch_stats": {"backbone": stats_backbone, "projector": stats_projector}, "metrics": metrics}
    return total, aux

  def after_update(self, state: TrainState, aux: dict) -> dict:
    del state
    return {"batch_stats": aux["batch_stats"]}

  def embed(self, params, extra, images, *, train: bool = False):
    features, _ = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], images, train=train)
    return features
