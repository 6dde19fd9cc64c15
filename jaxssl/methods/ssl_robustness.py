"""Self-supervision for robustness and uncertainty (Hendrycks, Mazeika, Kadavath, Song 2019,
"Using Self-Supervised Learning Can Improve Model Robustness and Uncertainty").

Supervised training with an auxiliary self-supervised loss: the classifier's cross-entropy on
the labelled images plus lambda times RotNet's loss on the four rotations of each image, both
heads on the same backbone features:

  L = CE(g(f(x)), y) + lambda * 1/4 sum_r CE(h(f(rot_r(x))), r).

`robustness.aux_weight = 0` is the plain supervised baseline the paper compares with: the
backbone then sees the upright images only. The
evaluation (`jaxssl.evaluation.robustness`, written to eval/summary.json) measures what the
paper reports: clean accuracy, accuracy under common corruptions at five severities, and
out-of-distribution detection (AUROC) with the maximum softmax probability and with the paper's
score, the rotation loss minus the KL divergence of the prediction from uniform.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxssl import losses, models
from jaxssl.methods.base import TrainState
from jaxssl.methods.common import view_images
from jaxssl.models import functional
from jaxssl.transforms import augment, pretext


class SSLRobustness:
  """Supervised training plus an auxiliary rotation loss, as pure functions."""

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0):
    if not num_classes:
      raise ValueError("SSL for robustness trains a classifier and needs labelled data; config.data names a source without labels.")
    self.config = config
    self.num_classes = num_classes
    self.view_specs = tuple(augment.spec_from_config(c) for c in config.augment.views)
    abstract = nnx.eval_shape(lambda: self._networks(nnx.Rngs(0)))
    self.backbone, self.classifier, self.rotation_head = (functional.split_module(m)[0] for m in abstract)

  def _networks(self, rngs: nnx.Rngs) -> tuple[nnx.Module, ...]:
    backbone = models.make_backbone(self.config.model, rngs)
    classifier = nnx.Linear(backbone.num_features, self.num_classes, rngs=rngs)
    rotation_head = nnx.Linear(backbone.num_features, pretext.NUM_ROTATIONS, rngs=rngs)
    return backbone, classifier, rotation_head

  def init(self, rng: jax.Array) -> tuple[dict, dict]:
    names = ("backbone", "classifier", "rotation_head")
    _, params, stats = zip(*(functional.split_module(m) for m in self._networks(nnx.Rngs(rng))))
    return dict(zip(names, params)), {"batch_stats": {"backbone": stats[0]}}

  def loss(self, params, extra, batch, rng, step):
    del step
    (images,) = view_images(rng, (batch["view0"],), self.view_specs[:1])
    aux_weight = self.config.robustness.aux_weight
    if aux_weight:
      inputs, rotation_labels = pretext.four_rotations(images)
    else:
      # The paper's baseline is plain supervised training: without the auxiliary loss the
      # rotated copies would only bias BN's batch statistics (and cost 4x the compute).
      inputs, rotation_labels = images, None
    features, backbone_stats = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], inputs, train=True)
    upright = features[:: pretext.NUM_ROTATIONS] if aux_weight else features
    class_logits, _ = self.classifier(params["classifier"], {}, upright, train=True)
    classification_loss = losses.softmax_cross_entropy(class_logits, batch["label"])
    valid = batch["label"] >= 0
    metrics = {
        "classification_loss": classification_loss,
        "train_top1": jnp.sum((class_logits.argmax(-1) == batch["label"]) * valid) / jnp.maximum(valid.sum(), 1),
    }
    total = classification_loss
    if aux_weight:
      rotation_logits, _ = self.rotation_head(params["rotation_head"], {}, features, train=True)
      metrics["rotation_loss"] = losses.softmax_cross_entropy(rotation_logits, rotation_labels)
      total = total + aux_weight * metrics["rotation_loss"]
    return total, {"batch_stats": {"backbone": backbone_stats}, "metrics": metrics}

  def after_update(self, state: TrainState, aux: dict) -> dict:
    del state
    return {"batch_stats": aux["batch_stats"]}

  def embed(self, params, extra, images, *, train: bool = False):
    features, _ = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], images, train=train)
    return features

  def classify(self, params, extra, images) -> tuple[jax.Array, jax.Array]:
    """(class logits [B, classes], mean rotation loss over the four rotations [B]) of normalised
    images, with BN's running statistics: what the OOD evaluation scores."""
    rotated, rotation_labels = pretext.four_rotations(images)
    features, _ = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], rotated, train=False)
    class_logits, _ = self.classifier(params["classifier"], {}, features[:: pretext.NUM_ROTATIONS], train=False)
    rotation_logits, _ = self.rotation_head(params["rotation_head"], {}, features, train=False)
    log_probs = jax.nn.log_softmax(rotation_logits.astype(jnp.float32))
    per_input = -jnp.take_along_axis(log_probs, rotation_labels[:, None], axis=-1)[:, 0]
    return class_logits, per_input.reshape(-1, pretext.NUM_ROTATIONS).mean(-1)

  def class_logits(self, params, extra, images) -> jax.Array:
    """The class logits [B, classes] of normalised upright images alone: `classify`'s first
    output at a quarter of its cost (BN uses running statistics, so each image is on its own)."""
    features, _ = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], images, train=False)
    return self.classifier(params["classifier"], {}, features, train=False)[0]
