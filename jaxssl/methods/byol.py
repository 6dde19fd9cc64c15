"""BYOL: Bootstrap Your Own Latent (Grill et al. 2020).

An online network (encoder f, projector g, predictor q) regresses the projection that an
exponential-moving-average target network (f', g') gives for another view of the image:

  L = ||norm(q(g(f(v)))) - sg(norm(g'(f'(v'))))||^2, symmetrised over the two views,
  target <- tau * target + (1 - tau) * online after each optimizer step,
  tau_k = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2.

Nothing in the loss prevents collapse; the predictor plus the slow target is what does.

`config.byol.predictor = 'direct'` sets the predictor instead of learning it: DirectPred (Tian,
Chen & Ganguli 2021, eq. 18-19), built from the running correlation matrix of the online
projections (`losses.direct_predictor`), the setting their paper studies BYOL in.
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

_TARGET_PARTS = ("backbone", "projector")


class BYOL:
  """BYOL as pure functions; see the module docstring for the equations."""

  PREDICTORS = ("learned", "direct")

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0):
    self.config = config
    self.num_classes = num_classes
    options = config.get("byol", {})
    self.predictor_kind = options.get("predictor", "learned")
    if self.predictor_kind not in self.PREDICTORS:
      raise ValueError(f"config.byol.predictor is '{self.predictor_kind}'; choose one of {self.PREDICTORS}.")
    self.direct_rho = options.get("direct_rho", 0.3)
    self.direct_eps = options.get("direct_eps", 0.01)
    self.view_specs = tuple(augment.spec_from_config(c) for c in config.augment.views)
    # Only the static structure is kept; `nnx.eval_shape` traces shapes without drawing weights.
    abstract = nnx.eval_shape(lambda: self._networks(nnx.Rngs(0)))
    self.backbone, self.projector, self.predictor, self.probe = (functional.split_module(m)[0] for m in abstract)

  def _networks(self, rngs: nnx.Rngs) -> tuple[nnx.Module, ...]:
    """(backbone, projector, predictor, probe) as in the paper: MLPs of 4096 -> 256."""
    cfg = self.config.model
    backbone = models.make_backbone(cfg, rngs)
    dtype = models.compute_dtype(cfg.dtype)
    projector = MLPHead(backbone.num_features, cfg.projector_hidden_dim, cfg.projection_dim, dtype=dtype, rngs=rngs)
    predictor = MLPHead(cfg.projection_dim, cfg.predictor_hidden_dim, cfg.projection_dim, dtype=dtype, rngs=rngs)
    probe = nnx.Linear(backbone.num_features, max(self.num_classes, 1), rngs=rngs)
    return backbone, projector, predictor, probe

  def init(self, rng: jax.Array) -> tuple[dict, dict]:
    names = ("backbone", "projector", "predictor", "probe")
    _, params, stats = zip(*(functional.split_module(m) for m in self._networks(nnx.Rngs(rng))))
    params, stats = dict(zip(names, params)), dict(zip(names, stats))
    del stats["probe"]  # a Linear layer has no batch statistics
    if not self.num_classes:
      del params["probe"]
    if self.predictor_kind == "direct":
      # DirectPred computes the predictor, so the learned one gets neither weights nor updates.
      del params["predictor"], stats["predictor"]
    # The target starts as an exact copy of the online encoder and projector.
    copy = lambda tree: jax.tree.map(jnp.array, tree)
    extra = {
        "batch_stats": stats,
        "target_params": {k: copy(params[k]) for k in _TARGET_PARTS},
        "target_batch_stats": {k: copy(stats[k]) for k in _TARGET_PARTS},
    }
    if self.predictor_kind == "direct":
      dim = self.config.model.projection_dim
      extra["projection_correlation"] = jnp.zeros((dim, dim), jnp.float32)
    return params, extra

  def _embed_and_project(self, params, stats, images, train, views=1):
    features, backbone_stats = self.backbone(params["backbone"], stats["backbone"], images, train=train, views=views)
    projection, projector_stats = self.projector(params["projector"], stats["projector"], features, train=train, views=views)
    return features, projection, {"backbone": backbone_stats, "projector": projector_stats}

  def _predict(self, params, stats, extra, projections):
    """The online predictions of both views; `stats` (the encoder's and projector's new batch
    statistics) gains the predictor's, and the third result is DirectPred's new state."""
    if self.predictor_kind == "learned":
      interleaved, predictor_stats = self.predictor(
          params["predictor"], extra["batch_stats"]["predictor"], normalization.interleave(projections),
          train=True, views=len(projections),
      )
      return normalization.deinterleave(interleaved, len(projections)), {**stats, "predictor": predictor_stats}, {}
    # As in DirectPred's BYOL: the correlation of the online projections of both views.
    predictor, correlation = losses.running_direct_predictor(
        extra["projection_correlation"], projections, self.direct_rho, self.direct_eps
    )
    return [projection @ predictor for projection in projections], stats, {"projection_correlation": correlation}

  def loss(self, params, extra, batch, rng, step):
    del step
    views = view_images(rng, (batch["view0"], batch["view1"]), self.view_specs)
    # Each view gets its own BN batch statistics, as in the paper's one pass per view; one pass
    # over the interleaved views gives each weight one gradient (`models.normalization`).
    images, num_views = normalization.interleave(views), len(views)
    features, online, stats = self._embed_and_project(params, extra["batch_stats"], images, True, num_views)
    _, target, target_stats = self._embed_and_project(extra["target_params"], extra["target_batch_stats"], images, True, num_views)
    features = normalization.deinterleave(features, num_views)
    online_projections = normalization.deinterleave(online, num_views)
    projections = normalization.deinterleave(target, num_views)
    predictions, stats, predictor_state = self._predict(params, stats, extra, online_projections)
    loss = losses.byol_loss(tuple(predictions), tuple(projections))
    metrics = {"byol_loss": loss, "embedding_std": embedding_std(online_projections[0])}
    total = loss
    if self.num_classes:
      probe_loss, probe_accuracy = linear_probe_loss(self.probe, params["probe"], features[0], batch["label"])
      total = total + probe_loss
      metrics.update(probe_loss=probe_loss, probe_top1=probe_accuracy)
    aux = {"batch_stats": stats, "target_batch_stats": target_stats, "metrics": metrics, **predictor_state}
    return total, aux

  def target_decay(self, step: jax.Array) -> jax.Array:
    return schedules.cosine_increase(
        step, base_value=self.config.byol.base_target_decay, total_steps=self.config.total_steps
    )

  def after_update(self, state: TrainState, aux: dict) -> dict:
    # EMA of the parameters the optimizer has just updated (the paper applies it after the step).
    tau = self.target_decay(state.step)
    online = {k: state.params[k] for k in _TARGET_PARTS}
    target = jax.tree.map(lambda t, o: tau * t + (1.0 - tau) * o, state.extra["target_params"], online)
    extra = {
        "batch_stats": aux["batch_stats"],
        "target_params": target,
        "target_batch_stats": aux["target_batch_stats"],
    }
    if self.predictor_kind == "direct":
      extra["projection_correlation"] = aux["projection_correlation"]
    return extra

  def embed(self, params, extra, images, *, train: bool = False):
    features, _ = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], images, train=train)
    return features
