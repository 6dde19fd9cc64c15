"""MoCo v3 (Chen, Xie, He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers").

An online network (encoder f, projector g, predictor h) and a momentum encoder (f', g'), an
exponential moving average of (f, g). There is no queue: the keys of the same global batch are
the dictionary.

  q_v = h(g(f(v))),  k_v = g'(f'(v)),
  ctr(q, k) = CE(norm(q) norm(k)^T / tau, labels = diagonal) * 2 tau,
  L = ctr(q_1, k_2) + ctr(q_2, k_1),
  momentum m_k = 1 - (1 - m_base) (cos(pi k / K) + 1) / 2   (0.99 -> 1).

With a ViT encoder the paper freezes the random patch projection (`model.vit.freeze_patch_embedding`)
for stability. The official code updates the momentum encoder at the start of step k with the
parameters after k optimizer updates; applying the same update right after the k-th optimizer
step (`after_update`, with m_k) is the same computation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxssl import losses, models, schedules
from jaxssl.transforms import augment
from jaxssl.methods.base import TrainState
from jaxssl.methods.common import embedding_std, linear_probe_loss, view_images
from jaxssl.models import functional, normalization
from jaxssl.models.heads import MLPHead

_MOMENTUM_PARTS = ("backbone", "projector")


class MoCoV3:
  """MoCo v3 as pure functions; see the module docstring for the equations."""

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0):
    self.config = config
    self.num_classes = num_classes
    if config.moco_v3.temperature <= 0:
      raise ValueError(f"config.moco_v3.temperature must be positive, got {config.moco_v3.temperature}; the paper uses 0.2 (ViT) or 1.0 (ResNet).")
    self.view_specs = tuple(augment.spec_from_config(c) for c in config.augment.views)
    abstract = nnx.eval_shape(lambda: self._networks(nnx.Rngs(0)))
    self.backbone, self.projector, self.predictor, self.probe = (functional.split_module(m)[0] for m in abstract)

  def _networks(self, rngs: nnx.Rngs) -> tuple[nnx.Module, ...]:
    """(backbone, projector, predictor, probe). Paper (sec. 4 and the official code): projector
    3 layers for ViT, 2 for ResNet; predictor 2 layers; hidden 4096, output 256; BN after every
    layer, the last one without scale and offset."""
    cfg = self.config.model
    backbone = models.make_backbone(cfg, rngs)
    dtype = models.compute_dtype(cfg.dtype)
    projector = MLPHead(
        backbone.num_features, cfg.projector_hidden_dim, cfg.projection_dim,
        num_hidden_layers=cfg.projector_num_layers - 1, output_norm=True, dtype=dtype, rngs=rngs,
    )
    predictor = MLPHead(
        cfg.projection_dim, cfg.predictor_hidden_dim, cfg.projection_dim,
        num_hidden_layers=cfg.predictor_num_layers - 1, output_norm=cfg.predictor_output_batch_norm,
        dtype=dtype, rngs=rngs,
    )
    probe = nnx.Linear(backbone.num_features, max(self.num_classes, 1), rngs=rngs)
    return backbone, projector, predictor, probe

  def init(self, rng: jax.Array) -> tuple[dict, dict]:
    names = ("backbone", "projector", "predictor", "probe")
    _, params, stats = zip(*(functional.split_module(m) for m in self._networks(nnx.Rngs(rng))))
    params, stats = dict(zip(names, params)), dict(zip(names, stats))
    del stats["probe"]  # a Linear layer has no batch statistics
    if not self.num_classes:
      del params["probe"]
    # The momentum encoder starts as an exact copy of the online encoder and projector.
    copy = lambda tree: jax.tree.map(jnp.array, tree)
    extra = {
        "batch_stats": stats,
        "momentum_params": {k: copy(params[k]) for k in _MOMENTUM_PARTS},
        "momentum_batch_stats": {k: copy(stats[k]) for k in _MOMENTUM_PARTS},
    }
    return params, extra

  def _encode(self, params, stats, images, views):
    """(features, projection, new batch statistics) of the encoder and projector in `params` on
    `views` interleaved views, each with its own BN statistics (`models.normalization`)."""
    features, backbone_stats = self.backbone(params["backbone"], stats["backbone"], images, train=True, views=views)
    projection, projector_stats = self.projector(params["projector"], stats["projector"], features, train=True, views=views)
    return features, projection, {"backbone": backbone_stats, "projector": projector_stats}

  def _online(self, params, stats, images, views):
    features, projection, new_stats = self._encode(params, stats, images, views)
    query, new_stats["predictor"] = self.predictor(params["predictor"], stats["predictor"], projection, train=True, views=views)
    return features, projection, query, new_stats

  def loss(self, params, extra, batch, rng, step):
    del step
    views = view_images(rng, (batch["view0"], batch["view1"]), self.view_specs)
    # Per-view BatchNorm statistics, as the official code's one pass per view; one pass over the
    # interleaved views gives each weight one gradient (`models.normalization`).
    images, num_views = normalization.interleave(views), len(views)
    features, projections, queries, stats = self._online(params, extra["batch_stats"], images, num_views)
    _, keys, momentum_stats = self._encode(extra["momentum_params"], extra["momentum_batch_stats"], images, num_views)
    queries, keys = normalization.deinterleave(queries, num_views), normalization.deinterleave(keys, num_views)
    features = normalization.deinterleave(features, num_views)
    first_projection = normalization.deinterleave(projections, num_views)[0]
    loss = losses.moco_v3_loss(tuple(queries), tuple(keys), self.config.moco_v3.temperature)
    metrics = {"moco_v3_loss": loss, "embedding_std": embedding_std(first_projection)}
    total = loss
    if self.num_classes:
      probe_loss, probe_accuracy = linear_probe_loss(self.probe, params["probe"], features[0], batch["label"])
      total = total + probe_loss
      metrics.update(probe_loss=probe_loss, probe_top1=probe_accuracy)
    aux = {"batch_stats": stats, "momentum_batch_stats": momentum_stats, "metrics": metrics}
    return total, aux

  def momentum(self, step: jax.Array) -> jax.Array:
    """m_k = 1 - (1 - m_base) (cos(pi k / K) + 1) / 2: m_base at step 0, 1 at the last step."""
    return schedules.cosine_increase(step, base_value=self.config.moco_v3.base_momentum, total_steps=self.config.total_steps)

  def after_update(self, state: TrainState, aux: dict) -> dict:
    m = self.momentum(state.step)
    online = {k: state.params[k] for k in _MOMENTUM_PARTS}
    momentum_params = jax.tree.map(lambda t, o: m * t + (1.0 - m) * o, state.extra["momentum_params"], online)
    return {
        "batch_stats": aux["batch_stats"],
        "momentum_params": momentum_params,
        "momentum_batch_stats": aux["momentum_batch_stats"],
    }

  def embed(self, params, extra, images, *, train: bool = False):
    features, _ = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], images, train=train)
    return features
