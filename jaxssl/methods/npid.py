"""NPID: Non-Parametric Instance Discrimination (Wu, Xiong, Yu, Lin 2018).

Every training image is its own class. Its "class weight" is a memory-bank entry v_i, the
L2-normalised 128-d feature the network gave it when it was last seen:

  P(i | v) = exp(v_i.v / tau) / Z,   tau = 0.07,
  v_i <- norm(m v_i + (1 - m) v) after the step (m = 0.5, proximal regularisation, sec. 3.4).

The loss is either the full softmax over all N entries (Z = sum_j exp(v_j.v / tau)) or noise-
contrastive estimation with m noise entries drawn uniformly from the bank and Z estimated once,
on the first batch, from the mean of exp(v_j.v / tau) x N, then kept fixed (sec. 3.2).
Evaluation is the paper's weighted kNN (k = 200, tau = 0.07), `config.eval.knn_k` /
`knn_temperature`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxssl import losses, models
from jaxssl.transforms import augment
from jaxssl.methods import dictionaries
from jaxssl.methods.base import TrainState
from jaxssl.methods.common import embedding_std, linear_probe_loss, view_images
from jaxssl.methods.moco import ProjectionHead
from jaxssl.models import functional

LOSSES = ("nce", "softmax")


def estimate_log_normalizer(similarities: jax.Array, temperature: float, num_examples: int) -> jax.Array:
  """log Z with Z = N * mean_j exp(s_j / tau) over the similarities seen (Wu et al., eq. 6)."""
  scaled = similarities.reshape(-1) / temperature
  return jax.nn.logsumexp(scaled) - jnp.log(scaled.size) + jnp.log(num_examples)


def instance_discrimination_loss(embeddings, bank, indices, log_normalizer, noise_rng, cfg) -> tuple[jax.Array, jax.Array]:
  """(loss, log Z) of unit `embeddings` [B, D] against their memory-bank entries `bank[indices]`.

  `cfg.loss` 'softmax': the full softmax over the bank (eq. 2); 'nce': NCE with
  `cfg.num_negatives` uniform noise entries and log Z estimated on the first batch (NaN until
  then) and kept (eq. 6). The bank is state, not a parameter: no gradient reaches it.
  """
  if cfg.loss == "softmax":
    return losses.softmax_cross_entropy(embeddings @ bank.T / cfg.temperature, indices), log_normalizer
  positive = jnp.sum(embeddings * bank[indices], axis=-1)
  negative = embeddings @ dictionaries.sample_negatives(noise_rng, bank, cfg.num_negatives).T
  num_examples = bank.shape[0]
  estimate = jax.lax.stop_gradient(
      estimate_log_normalizer(jnp.concatenate([positive[:, None], negative], -1), cfg.temperature, num_examples)
  )
  log_normalizer = jnp.where(jnp.isnan(log_normalizer), estimate, log_normalizer)
  return losses.nce_loss(positive, negative, cfg.temperature, log_normalizer, num_examples), log_normalizer


class NPID:
  """NPID as pure functions; see the module docstring for the equations."""

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0, num_train_examples: int = 0):
    self.config = config
    self.num_classes = num_classes
    if config.npid.loss not in LOSSES:
      raise ValueError(f"config.npid.loss '{config.npid.loss}' is not known; choose one of {LOSSES}.")
    self.bank_size = dictionaries.memory_bank_size(config.npid.bank_size, num_train_examples)
    self.view_specs = tuple(augment.spec_from_config(c) for c in config.augment.views)
    abstract = nnx.eval_shape(lambda: self._networks(nnx.Rngs(0)))
    self.backbone, self.head, self.probe = (functional.split_module(m)[0] for m in abstract)

  def _networks(self, rngs: nnx.Rngs) -> tuple[nnx.Module, ...]:
    cfg = self.config.model
    backbone = models.make_backbone(cfg, rngs)
    # The paper replaces the classifier with one linear layer to 128 dimensions; a hidden layer
    # with BN (`model.head_hidden_dim`, `model.head_batch_norm`) is an option for short runs.
    head = ProjectionHead(
        backbone.num_features, cfg.get("head_hidden_dim", 0), cfg.projection_dim,
        batch_norm=cfg.get("head_batch_norm", False), dtype=models.compute_dtype(cfg.dtype), rngs=rngs,
    )
    probe = nnx.Linear(backbone.num_features, max(self.num_classes, 1), rngs=rngs)
    return backbone, head, probe

  def init(self, rng: jax.Array) -> tuple[dict, dict]:
    network_rng, bank_rng = jax.random.split(rng)
    names = ("backbone", "head", "probe")
    _, params, stats = zip(*(functional.split_module(m) for m in self._networks(nnx.Rngs(network_rng))))
    params = dict(zip(names, params))
    if not self.num_classes:
      del params["probe"]
    extra = {
        "batch_stats": {"backbone": stats[0], "head": stats[1]},
        "memory_bank": dictionaries.init_memory_bank(bank_rng, self.bank_size, self.config.model.projection_dim),
        # NCE's normalising constant; NaN until the first batch has estimated it.
        "log_normalizer": jnp.full((), jnp.nan, jnp.float32),
    }
    return params, extra

  # The memory bank is split over devices by rows; the rest of `extra` is replicated.
  row_sharded_extra = (("memory_bank",),)

  def loss(self, params, extra, batch, rng, step):
    del step
    cfg = self.config.npid
    indices = dictionaries.check_indices(batch, "NPID")
    view_rng, noise_rng = jax.random.split(rng)
    (images,) = view_images(view_rng, (batch["view0"],), self.view_specs[:1])
    features, stats = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], images, train=True)
    projection, head_stats = self.head(params["head"], extra["batch_stats"]["head"], features, train=True)
    embeddings = losses.l2_normalize(projection)
    contrastive, log_normalizer = instance_discrimination_loss(
        embeddings, extra["memory_bank"], indices, extra["log_normalizer"], noise_rng, cfg
    )
    metrics = {"npid_loss": contrastive, "embedding_std": embedding_std(projection)}
    total = contrastive
    if self.num_classes:
      probe_loss, probe_accuracy = linear_probe_loss(self.probe, params["probe"], features, batch["label"])
      total = total + probe_loss
      metrics.update(probe_loss=probe_loss, probe_top1=probe_accuracy)
    aux = {
        "batch_stats": {"backbone": stats, "head": head_stats},
        "embeddings": jax.lax.stop_gradient(embeddings),
        "indices": indices,
        "log_normalizer": log_normalizer,
        "metrics": metrics,
    }
    return total, aux

  def after_update(self, state: TrainState, aux: dict) -> dict:
    bank = dictionaries.update_memory_bank(state.extra["memory_bank"], aux["indices"], aux["embeddings"], self.config.npid.bank_momentum)
    return {"batch_stats": aux["batch_stats"], "memory_bank": bank, "log_normalizer": aux["log_normalizer"]}

  def embed(self, params, extra, images, *, train: bool = False):
    features, _ = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], images, train=train)
    return features
