"""Rotation feature decoupling (Feng, Xu, Tao 2019, "Self-Supervised Representation Learning by
Rotation Feature Decoupling").

RotNet's features must tell rotations apart, which is not what a downstream task wants of all of
them. Here the backbone's feature f(x) is split in two parts (the official code splits AlexNet's
fc7 in halves):

* f_rot, the rotation-related part, feeds RotNet's 4-way rotation classifier;
* f_inv, the rotation-irrelevant part, is pulled to its mean over the image's four rotations
  (MSE to a stop-gradient mean), and that mean, through a linear layer and L2 normalisation,
  is trained with NPID's instance discrimination against a memory bank (`config.npid`).

  L = sum_r w_ir CE(rot(f_rot(x_ir)), r) / 4B + ||f_inv(x_ir) - mean_r f_inv(x_ir)||^2 + L_NPID.

Some images look upright whatever their rotation (a ball, a flower from above); the rotation
loss on them is noise. The paper treats upright images as positives and rotated ones as
unlabelled (positive-unlabelled learning) and weights the rotation loss of rotation r of image i
by w_ir = 1 - p_ir^gamma (gamma = 2; w = 1 at 0 degrees), where p_ir is the probability that
rotation r of image i is upright. The official code reads p from a file made by a separately
trained RotNet and turns the weights on for its last 35 of 245 epochs. Here p is recorded in the
train state (`upright_probability`, one row per training image, sharded like the memory bank)
from this run's own rotation classifier each time the image is seen, and the weights apply from
`config.decoupling.pu_start_step`; `decoupling.pu_gamma = 0` turns them off.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxssl import losses, models
from jaxssl.methods import dictionaries
from jaxssl.methods.base import TrainState
from jaxssl.methods.common import linear_probe_loss, view_images
from jaxssl.methods.npid import instance_discrimination_loss
from jaxssl.models import functional
from jaxssl.transforms import augment, pretext
from jaxssl.models.normalization import batch_norm


class FeatureLayer(nnx.Module):
  """Linear-BN-ReLU on the backbone's pooled features: the official AlexNet's fc7, the layer
  whose output is split (`decoupling.feature_dim`)."""

  def __init__(self, in_features: int, out_features: int, *, rngs: nnx.Rngs):
    self.linear = nnx.Linear(in_features, out_features, rngs=rngs)
    self.norm = batch_norm(out_features, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return nnx.relu(self.norm(self.linear(x)))


def positive_unlabelled_weights(upright_probability: jax.Array, gamma: float) -> jax.Array:
  """w = 1 - p^gamma for the rotated inputs, 1 for the upright one: [..., 4] -> [..., 4]."""
  weights = 1.0 - upright_probability**gamma
  return weights.at[..., 0].set(1.0)


class RotationDecoupling:
  """Rotation feature decoupling as pure functions; see the module docstring."""

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0, num_train_examples: int = 0):
    self.config = config
    self.num_classes = num_classes
    cfg = config.decoupling
    if not 0.0 < cfg.rotation_fraction < 1.0:
      raise ValueError(f"config.decoupling.rotation_fraction must be in (0, 1), got {cfg.rotation_fraction}; the paper uses 0.5.")
    self.bank_size = dictionaries.memory_bank_size(config.npid.bank_size, num_train_examples)
    self.view_specs = tuple(augment.spec_from_config(c) for c in config.augment.views)
    abstract = nnx.eval_shape(lambda: self._networks(nnx.Rngs(0)))
    self.backbone, self.feature_layer, self.rotation_head, self.invariant_head, self.probe = (
        functional.split_module(m)[0] for m in abstract
    )

  def _split(self, num_features: int) -> int:
    """Features [:split] are rotation-related, [split:] rotation-irrelevant."""
    return max(1, min(num_features - 1, round(num_features * self.config.decoupling.rotation_fraction)))

  def _networks(self, rngs: nnx.Rngs) -> tuple[nnx.Module, ...]:
    backbone = models.make_backbone(self.config.model, rngs)
    width = self.config.decoupling.feature_dim
    # With feature_dim 0 the backbone's pooled features are split directly (an identity layer).
    feature_layer = FeatureLayer(backbone.num_features, width, rngs=rngs) if width else nnx.Sequential(lambda x: x)
    width = width or backbone.num_features
    split = self._split(width)
    rotation_head = nnx.Linear(split, pretext.NUM_ROTATIONS, rngs=rngs)
    # Official `LinearTransformationNorm`: one linear layer, then L2 normalisation (in `loss`).
    invariant_head = nnx.Linear(width - split, self.config.model.projection_dim, rngs=rngs)
    probe = nnx.Linear(backbone.num_features, max(self.num_classes, 1), rngs=rngs)
    return backbone, feature_layer, rotation_head, invariant_head, probe

  def init(self, rng: jax.Array) -> tuple[dict, dict]:
    network_rng, bank_rng = jax.random.split(rng)
    names = ("backbone", "feature_layer", "rotation_head", "invariant_head", "probe")
    _, params, stats = zip(*(functional.split_module(m) for m in self._networks(nnx.Rngs(network_rng))))
    params = dict(zip(names, params))
    if not self.num_classes:
      del params["probe"]
    extra = {
        "batch_stats": {"backbone": stats[0], "feature_layer": stats[1]},
        "memory_bank": dictionaries.init_memory_bank(bank_rng, self.bank_size, self.config.model.projection_dim),
        "log_normalizer": jnp.full((), jnp.nan, jnp.float32),
        # Nothing is known to look upright before the first visit: weight 1 everywhere.
        "upright_probability": jnp.zeros((self.bank_size, pretext.NUM_ROTATIONS), jnp.float32),
    }
    return params, extra

  row_sharded_extra = (("memory_bank",), ("upright_probability",))

  def loss(self, params, extra, batch, rng, step):
    cfg = self.config.decoupling
    indices = dictionaries.check_indices(batch, "Rotation feature decoupling")
    view_rng, noise_rng = jax.random.split(rng)
    (images,) = view_images(view_rng, (batch["view0"],), self.view_specs[:1])
    rotated, rotation_labels = pretext.four_rotations(images)
    pooled, backbone_stats = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], rotated, train=True)
    features, feature_stats = self.feature_layer(params["feature_layer"], extra["batch_stats"]["feature_layer"], pooled, train=True)
    split = self._split(features.shape[-1])
    batch_size = images.shape[0]

    # Rotation classification on the first part, weighted by the PU weights once they are on.
    logits, _ = self.rotation_head(params["rotation_head"], {}, features[:, :split], train=True)
    per_input = -jnp.take_along_axis(jax.nn.log_softmax(logits.astype(jnp.float32)), rotation_labels[:, None], axis=-1)[:, 0]
    weights = positive_unlabelled_weights(extra["upright_probability"][indices], cfg.pu_gamma) if cfg.pu_gamma else jnp.ones((batch_size, pretext.NUM_ROTATIONS))
    weights = jnp.where(step >= cfg.pu_start_step, weights, 1.0).reshape(-1)
    rotation_loss = jnp.mean(weights * per_input)

    # The second part: invariant to rotation, and discriminative between images.
    invariant = features[:, split:].reshape(batch_size, pretext.NUM_ROTATIONS, -1)
    mean_invariant = invariant.mean(axis=1)
    invariance_loss = jnp.mean(jnp.square(invariant - jax.lax.stop_gradient(mean_invariant)[:, None]))
    projection, _ = self.invariant_head(params["invariant_head"], {}, mean_invariant, train=True)
    embeddings = losses.l2_normalize(projection)
    instance_loss, log_normalizer = instance_discrimination_loss(
        embeddings, extra["memory_bank"], indices, extra["log_normalizer"], noise_rng, self.config.npid
    )

    total = cfg.rotation_weight * rotation_loss + cfg.invariance_weight * invariance_loss + cfg.instance_weight * instance_loss
    metrics = {
        "rotation_loss": rotation_loss,
        "rotation_top1": jnp.mean(logits.argmax(-1) == rotation_labels),
        "invariance_loss": invariance_loss,
        "instance_loss": instance_loss,
        "mean_pu_weight": jnp.mean(weights),
    }
    if self.num_classes:
      upright = pooled[:: pretext.NUM_ROTATIONS]
      probe_loss, probe_accuracy = linear_probe_loss(self.probe, params["probe"], upright, batch["label"])
      total = total + probe_loss
      metrics.update(probe_loss=probe_loss, probe_top1=probe_accuracy)
    upright_probability = jax.nn.softmax(logits.astype(jnp.float32))[:, 0].reshape(batch_size, pretext.NUM_ROTATIONS)
    aux = {
        "batch_stats": {"backbone": backbone_stats, "feature_layer": feature_stats},
        "embeddings": jax.lax.stop_gradient(embeddings),
        "upright_probability": jax.lax.stop_gradient(upright_probability),
        "indices": indices,
        "log_normalizer": log_normalizer,
        "metrics": metrics,
    }
    return total, aux

  def after_update(self, state: TrainState, aux: dict) -> dict:
    extra = state.extra
    return {
        "batch_stats": aux["batch_stats"],
        "memory_bank": dictionaries.update_memory_bank(extra["memory_bank"], aux["indices"], aux["embeddings"], self.config.npid.bank_momentum),
        "log_normalizer": aux["log_normalizer"],
        "upright_probability": extra["upright_probability"].at[aux["indices"]].set(aux["upright_probability"]),
    }

  def embed(self, params, extra, images, *, train: bool = False):
    features, _ = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], images, train=train)
    return features
