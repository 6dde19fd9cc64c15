"""SwAV: Swapping Assignments between Views (Caron et al. 2020).

Every crop is encoded, projected and L2-normalised to z, and scored against K unit prototypes C.
The codes q of the global crops are soft assignments to the prototypes, made equipartitioned over
the global batch by Sinkhorn-Knopp (epsilon 0.05, 3 iterations); each crop then predicts the code
of every other global crop:

  L = mean_{i in global} mean_{v != i} -sum_k q_i,k log softmax(z_v^T C / T)_k,   T = 0.1.

Codes come from global crops only (optionally scored together with a queue of past global-crop
embeddings, for small batches); local crops only predict. The prototypes are projected back onto
the unit sphere after every step and kept frozen for the first epoch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxssl import losses, models
from jaxssl.transforms import augment
from jaxssl.methods import multicrop
from jaxssl.methods.base import TrainState
from jaxssl.methods.common import embedding_std, linear_probe_loss
from jaxssl.models import functional
from jaxssl.models.heads import MLPHead


class SwAV:
  """SwAV as pure functions; see the module docstring for the equations."""

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0):
    self.config = config
    self.num_classes = num_classes
    self.view_specs = tuple(augment.spec_from_config(c) for c in config.augment.views)
    self.local_spec = multicrop.local_augment_spec(config.augment)
    if len(self.view_specs) != 2:
      raise ValueError(f"SwAV computes codes from 2 global crops; config.augment.views has {len(self.view_specs)}, set 2.")
    queue_length = config.swav.queue_length
    if queue_length and queue_length % config.batch_size:
      raise ValueError(
          f"config.swav.queue_length={queue_length} is not a multiple of config.batch_size={config.batch_size}; "
          f"set it to {max(queue_length // config.batch_size, 1) * config.batch_size} (or 0 for no queue)."
      )
    abstract = nnx.eval_shape(lambda: self._networks(nnx.Rngs(0)))
    self.backbone, self.projector, self.prototypes, self.probe = (functional.split_module(m)[0] for m in abstract)

  def _networks(self, rngs: nnx.Rngs) -> tuple[nnx.Module, ...]:
    """(backbone, projector, prototypes, probe): the paper's 2048 -> 128 MLP and K prototypes."""
    cfg = self.config.model
    backbone = models.make_backbone(cfg, rngs)
    dtype = models.compute_dtype(cfg.dtype)
    projector = MLPHead(backbone.num_features, cfg.projector_hidden_dim, cfg.projection_dim, dtype=dtype, rngs=rngs)
    # Scores are cosines of unit vectors; they are computed in float32 whatever the model dtype.
    prototypes = nnx.Linear(cfg.projection_dim, self.config.swav.num_prototypes, use_bias=False, rngs=rngs)
    probe = nnx.Linear(backbone.num_features, max(self.num_classes, 1), rngs=rngs)
    return backbone, projector, prototypes, probe

  def init(self, rng: jax.Array) -> tuple[dict, dict]:
    names = ("backbone", "projector", "prototypes", "probe")
    _, params, stats = zip(*(functional.split_module(m) for m in self._networks(nnx.Rngs(rng))))
    params, stats = dict(zip(names, params)), dict(zip(names, stats))
    del stats["prototypes"], stats["probe"]  # Linear layers have no batch statistics
    if not self.num_classes:
      del params["probe"]
    extra = {"batch_stats": stats}
    if self.config.swav.queue_length:
      shape = (len(self.view_specs), self.config.swav.queue_length, self.config.model.projection_dim)
      extra["queue"] = jnp.zeros(shape, jnp.float32)
      extra["queue_size"] = jnp.zeros((), jnp.int32)  # rows filled so far, up to queue_length
    return self.project_params(params), extra

  def project_params(self, params: dict) -> dict:
    """Prototypes back onto the unit sphere (the reference normalises them before every step)."""
    kernel = params["prototypes"]["kernel"]
    return {**params, "prototypes": {**params["prototypes"], "kernel": losses.l2_normalize(kernel, axis=0).astype(kernel.dtype)}}

  def _codes(self, global_scores: jax.Array, extra: dict, prototypes: jax.Array) -> jax.Array:
    """Sinkhorn codes [G, B, K] of the global crops, scored together with the queue once full."""
    swav = self.config.swav
    sinkhorn = jax.vmap(lambda s: losses.sinkhorn_knopp(s, swav.sinkhorn_epsilon, swav.sinkhorn_iterations))
    if "queue" not in extra:
      return sinkhorn(global_scores)
    batch = global_scores.shape[1]

    def with_queue():
      queue_scores = jnp.einsum("gld,dk->glk", extra["queue"], prototypes)
      return sinkhorn(jnp.concatenate([queue_scores.astype(global_scores.dtype), global_scores], axis=1))[:, -batch:]

    # As in the reference, the queue takes part once it is full of real embeddings.
    return jax.lax.cond(extra["queue_size"] >= swav.queue_length, with_queue, lambda: sinkhorn(global_scores))

  def _updated_queue(self, extra: dict, global_embeddings: jax.Array, step: jax.Array) -> dict:
    """Newest global-crop embeddings first; filling starts at `queue_start_step`."""
    if "queue" not in extra:
      return {}
    batch = global_embeddings.shape[1]
    pushed = jnp.concatenate([global_embeddings.astype(jnp.float32), extra["queue"][:, :-batch]], axis=1)
    started = step >= self.config.swav.queue_start_step
    size = jnp.minimum(extra["queue_size"] + batch, self.config.swav.queue_length)
    return {
        "queue": jnp.where(started, pushed, extra["queue"]),
        "queue_size": jnp.where(started, size, extra["queue_size"]).astype(jnp.int32),
    }

  def loss(self, params, extra, batch, rng, step):
    num_global, batch_size = len(self.view_specs), batch["view0"].shape[0]
    groups = multicrop.augmented_crop_groups(rng, batch, self.view_specs, self.local_spec)
    stats = extra["batch_stats"]
    features, backbone_stats = multicrop.backbone_features(self.backbone, params["backbone"], stats["backbone"], groups)
    projection, projector_stats = self.projector(params["projector"], stats["projector"], features, train=True)
    embeddings = losses.l2_normalize(projection)
    prototypes = params["prototypes"]["kernel"].astype(jnp.float32)
    scores = multicrop.per_crop(embeddings @ prototypes, batch_size, num_global)  # [C, B, K]
    global_embeddings = jax.lax.stop_gradient(multicrop.per_crop(embeddings[: num_global * batch_size], batch_size, num_global))
    # Targets carry no gradient (the reference computes them under no_grad).
    codes = jax.lax.stop_gradient(self._codes(scores[:num_global], extra, prototypes))
    loss = losses.swav_loss(scores, codes, self.config.swav.temperature)
    metrics = {
        "swav_loss": loss,
        "embedding_std": embedding_std(global_embeddings[0]),
        # Fraction of prototypes that are some example's most likely code: low means collapse.
        "prototypes_used": jnp.mean(jnp.zeros(codes.shape[-1]).at[jnp.argmax(codes[0], -1)].set(1.0)),
    }
    total = loss
    if self.num_classes:
      probe_loss, probe_accuracy = linear_probe_loss(self.probe, params["probe"], features[:batch_size], batch["label"])
      total = total + probe_loss
      metrics.update(probe_loss=probe_loss, probe_top1=probe_accuracy)
    aux = {
        "batch_stats": {"backbone": backbone_stats, "projector": projector_stats},
        **self._updated_queue(extra, global_embeddings, step),
        "metrics": metrics,
    }
    return total, aux

  def after_update(self, state: TrainState, aux: dict) -> dict:
    del state
    return {k: v for k, v in aux.items() if k != "metrics"}

  def embed(self, params, extra, images, *, train: bool = False):
    features, _ = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], images, train=train)
    return features
