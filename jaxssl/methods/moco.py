"""MoCo v1 and v2: Momentum Contrast (He et al. 2020; Chen, Fan, Girshick, He 2020).

A query encoder f_q (backbone + head) embeds one view, a momentum key encoder f_k embeds the
other, and each query must pick its key out of a dictionary of negatives:

  L_q = -log exp(q.k+ / tau) / (exp(q.k+ / tau) + sum_{k- in queue} exp(q.k- / tau)),
  theta_k <- m theta_k + (1 - m) theta_q after every step (m = 0.999),
  the batch's keys then replace the oldest K / B-th of the queue.

v1: linear 128-d head, tau = 0.07. v2: 2-layer MLP head (no BN), tau = 0.2, blur augmentation.

Shuffle-BN. Query and key of an example must not be normalised with the same batch statistics,
or the model finds its positive through them. MoCo shuffles the keys across GPUs so each GPU's
BN sees a different mix. Here BN statistics are taken per sub-batch (`bn_groups` contiguous
groups of the global batch, one per GPU in the paper), and the keys are grouped after a random
permutation (`dictionaries.apply_shuffled_in_groups`).

`config.moco.dictionary` selects the paper's comparison (fig. 2, fig. 3): 'queue' (MoCo),
'end_to_end' (the current batch's keys are the negatives and receive gradients; no momentum
encoder) or 'memory_bank' (one momentum-updated slot per training example, negatives sampled).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxssl import losses, models
from jaxssl.transforms import augment
from jaxssl.methods import dictionaries
from jaxssl.methods.base import TrainState
from jaxssl.methods.common import embedding_std, linear_probe_loss, view_images
from jaxssl.models import functional, normalization

DICTIONARIES = ("queue", "end_to_end", "memory_bank")
_ENCODER_PARTS = ("backbone", "head")


class ProjectionHead(nnx.Module):
  """Linear (MoCo v1, NPID) or Linear-ReLU-Linear (MoCo v2) head, without BatchNorm.

  The official MoCo v2 head is fc-ReLU-fc; it has no BN, so no batch statistics can leak
  through it either. `batch_norm=True` adds BN after the hidden layer (fc-BN-ReLU-fc, SimCLR's
  and MoCo v3's head), which short runs from a small random network need (see configs/moco.py).
  """

  def __init__(self, in_features: int, hidden_features: int, out_features: int, *, batch_norm: bool = False, dtype: Any = None, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(in_features, hidden_features, dtype=dtype, rngs=rngs) if hidden_features else None
    self.norm = (
        normalization.batch_norm(hidden_features, dtype=dtype, rngs=rngs)
        if batch_norm and hidden_features else None
    )
    self.output = nnx.Linear(hidden_features or in_features, out_features, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.hidden is not None:
      x = self.hidden(x)
      x = nnx.relu(self.norm(x) if self.norm is not None else x)
    x = self.output(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


class MoCo:
  """MoCo (and its end-to-end / memory-bank baselines) as pure functions."""

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0, num_train_examples: int = 0):
    self.config = config
    self.num_classes = num_classes
    cfg = config.moco
    if cfg.dictionary not in DICTIONARIES:
      raise ValueError(f"config.moco.dictionary '{cfg.dictionary}' is not known; choose one of {DICTIONARIES}.")
    self.symmetric = bool(cfg.get("symmetric", False)) and cfg.dictionary == "queue"
    if cfg.dictionary == "queue":
      # A symmetric step enqueues the keys of both views.
      dictionaries.check_queue_size(cfg.queue_size, config.batch_size, 2 if self.symmetric else 1)
    self.num_groups = cfg.bn_groups if cfg.shuffle_bn else 1
    dictionaries.check_groups(config.batch_size, self.num_groups)
    self.bank_size = dictionaries.memory_bank_size(cfg.bank_size, num_train_examples) if cfg.dictionary == "memory_bank" else 0
    self.view_specs = tuple(augment.spec_from_config(c) for c in config.augment.views)
    abstract = nnx.eval_shape(lambda: self._networks(nnx.Rngs(0)))
    self.backbone, self.head, self.probe = (functional.split_module(m)[0] for m in abstract)

  def _networks(self, rngs: nnx.Rngs) -> tuple[nnx.Module, ...]:
    cfg = self.config.model
    backbone = models.make_backbone(cfg, rngs)
    hidden = cfg.projector_hidden_dim if cfg.mlp_head else 0
    head = ProjectionHead(
        backbone.num_features, hidden, cfg.projection_dim, batch_norm=cfg.get("head_batch_norm", False),
        dtype=models.compute_dtype(cfg.dtype), rngs=rngs,
    )
    probe = nnx.Linear(backbone.num_features, max(self.num_classes, 1), rngs=rngs)
    return backbone, head, probe

  def init(self, rng: jax.Array) -> tuple[dict, dict]:
    network_rng, dictionary_rng = jax.random.split(rng)
    names = ("backbone", "head", "probe")
    _, params, stats = zip(*(functional.split_module(m) for m in self._networks(nnx.Rngs(network_rng))))
    params = dict(zip(names, params))
    if not self.num_classes:
      del params["probe"]
    extra = {"batch_stats": {"backbone": stats[0], "head": stats[1]}}
    cfg, dim = self.config.moco, self.config.model.projection_dim
    if cfg.dictionary == "queue":
      # The key encoder starts as an exact copy of the query encoder.
      extra["key_params"] = {k: jax.tree.map(jnp.array, params[k]) for k in _ENCODER_PARTS}
      extra["key_batch_stats"] = jax.tree.map(jnp.array, extra["batch_stats"])
      extra["queue"] = dictionaries.init_queue(dictionary_rng, cfg.queue_size, dim)
    elif cfg.dictionary == "memory_bank":
      extra["memory_bank"] = dictionaries.init_memory_bank(dictionary_rng, self.bank_size, dim)
    return params, extra

  # The queue and the memory bank (whichever the dictionary has) are split over devices by rows.
  row_sharded_extra = (("queue", "keys"), ("memory_bank",))

  # -- encoders --------------------------------------------------------------------------------

  def _encoder(self, params: dict, stats: dict):
    """images -> ((features, projection), batch stats) for one (sub-)batch."""

    def encode(images):
      features, backbone_stats = self.backbone(params["backbone"], stats["backbone"], images, train=True)
      projection, head_stats = self.head(params["head"], stats["head"], features, train=True)
      return (features, projection), {"backbone": backbone_stats, "head": head_stats}

    return encode

  def encode_queries(self, params, stats, images):
    """((features, projection), new batch stats); BN statistics per contiguous sub-batch."""
    return dictionaries.apply_in_groups(self._encoder(params, stats), images, self.num_groups)

  def encode_keys(self, params, stats, images, rng):
    """Like `encode_queries`, but sub-batches are drawn after a random shuffle (shuffle-BN)."""
    if self.num_groups == 1:
      return self._encoder(params, stats)(images)
    return dictionaries.apply_shuffled_in_groups(self._encoder(params, stats), images, self.num_groups, rng)

  # -- loss and state update -----------------------------------------------------------------

  def loss(self, params, extra, batch, rng, step):
    del step
    cfg = self.config.moco
    view_rng, shuffle_rng, negatives_rng = jax.random.split(rng, 3)
    views = view_images(view_rng, (batch["view0"], batch["view1"]), self.view_specs)
    (features, projection), stats = self.encode_queries(params, extra["batch_stats"], views[0])
    queries = losses.l2_normalize(projection)
    aux = {}
    if cfg.dictionary == "queue":
      key_stats = extra["key_batch_stats"]
      (_, key_projection), key_stats = self.encode_keys(extra["key_params"], key_stats, views[1], shuffle_rng)
      # Keys come from the momentum encoder, which is not differentiated; kept to show intent.
      keys = jax.lax.stop_gradient(losses.l2_normalize(key_projection))
      contrastive = losses.info_nce(queries, keys, extra["queue"]["keys"], cfg.temperature)
      if self.symmetric:
        # The official CIFAR-10 demo's `--symmetric`: the second view is a query too, against
        # the first view's key; the two losses are summed and both views' keys enqueued.
        (_, projection_1), stats = self.encode_queries(params, stats, views[1])
        (_, key_projection_0), key_stats = self.encode_keys(extra["key_params"], key_stats, views[0], jax.random.fold_in(shuffle_rng, 1))
        keys_0 = jax.lax.stop_gradient(losses.l2_normalize(key_projection_0))
        contrastive = contrastive + losses.info_nce(losses.l2_normalize(projection_1), keys_0, extra["queue"]["keys"], cfg.temperature)
        keys = jnp.concatenate([keys_0, keys])
      aux["keys"], aux["key_batch_stats"] = keys, key_stats
    elif cfg.dictionary == "end_to_end":
      # Keys come from the query encoder itself and receive gradients; its running BN
      # statistics see both passes, in order, as in a PyTorch run.
      (_, key_projection), stats = self.encode_keys(params, stats, views[1], shuffle_rng)
      contrastive = losses.in_batch_info_nce(queries, losses.l2_normalize(key_projection), cfg.temperature)
    else:
      indices = dictionaries.check_indices(batch, "MoCo's memory-bank dictionary")
      bank = extra["memory_bank"]
      negatives = dictionaries.sample_negatives(negatives_rng, bank, cfg.bank_negatives)
      contrastive = losses.info_nce(queries, bank[indices], negatives, cfg.temperature)
      aux["queries"], aux["indices"] = jax.lax.stop_gradient(queries), indices
    metrics = {"moco_loss": contrastive, "embedding_std": embedding_std(projection)}
    total = contrastive
    if self.num_classes:
      probe_loss, probe_accuracy = linear_probe_loss(self.probe, params["probe"], features, batch["label"])
      total = total + probe_loss
      metrics.update(probe_loss=probe_loss, probe_top1=probe_accuracy)
    aux.update(batch_stats=stats, metrics=metrics)
    return total, aux

  def after_update(self, state: TrainState, aux: dict) -> dict:
    cfg = self.config.moco
    extra = {"batch_stats": aux["batch_stats"]}
    if cfg.dictionary == "queue":
      online = {k: state.params[k] for k in _ENCODER_PARTS}
      extra["key_params"] = dictionaries.momentum_update(state.extra["key_params"], online, cfg.momentum)
      extra["key_batch_stats"] = aux["key_batch_stats"]
      extra["queue"] = dictionaries.enqueue(state.extra["queue"], aux["keys"])
    elif cfg.dictionary == "memory_bank":
      extra["memory_bank"] = dictionaries.update_memory_bank(
          state.extra["memory_bank"], aux["indices"], aux["queries"], cfg.bank_momentum
      )
    return extra

  def embed(self, params, extra, images, *, train: bool = False):
    features, _ = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], images, train=train)
    return features
