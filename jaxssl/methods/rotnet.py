"""RotNet: unsupervised representation learning by predicting image rotations (Gidaris et al. 2018).

Every image enters the batch four times, turned by 0, 90, 180 and 270 degrees, and a 4-way
classifier on the backbone's pooled features names the rotation:

  L = 1 / 4B sum_i sum_{r=0..3} -log softmax(W f(rot_r(x_i)))_r.

To tell an upright image from a turned one the network must know where sky, ground and the
objects' tops are, which is what its features then encode. As in the official code
(`dataloader.py:rotate_img`), all four rotations of an image are in the same batch (VISSL
instead draws one random rotation per image), and BatchNorm sees all 4B inputs. The head is one
linear layer on the pooled features, as in the official ResNet and mmselfsup's (2048 -> 4).
"""

from __future__ import annotations

import jax
import ml_collections
from flax import nnx

from jaxssl import losses, models
from jaxssl.methods.base import TrainState
from jaxssl.methods.common import linear_probe_loss, view_images
from jaxssl.models import functional
from jaxssl.transforms import augment, pretext


class RotNet:
  """RotNet as pure functions; see the module docstring for the loss."""

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0):
    self.config = config
    self.num_classes = num_classes
    self.view_specs = tuple(augment.spec_from_config(c) for c in config.augment.views)
    abstract = nnx.eval_shape(lambda: self._networks(nnx.Rngs(0)))
    self.backbone, self.rotation_head, self.probe = (functional.split_module(m)[0] for m in abstract)

  def _networks(self, rngs: nnx.Rngs) -> tuple[nnx.Module, ...]:
    backbone = models.make_backbone(self.config.model, rngs)
    rotation_head = nnx.Linear(backbone.num_features, pretext.NUM_ROTATIONS, rngs=rngs)
    probe = nnx.Linear(backbone.num_features, max(self.num_classes, 1), rngs=rngs)
    return backbone, rotation_head, probe

  def init(self, rng: jax.Array) -> tuple[dict, dict]:
    names = ("backbone", "rotation_head", "probe")
    _, params, stats = zip(*(functional.split_module(m) for m in self._networks(nnx.Rngs(rng))))
    params = dict(zip(names, params))
    if not self.num_classes:
      del params["probe"]
    return params, {"batch_stats": {"backbone": stats[0]}}

  def loss(self, params, extra, batch, rng, step):
    del step
    (images,) = view_images(rng, (batch["view0"],), self.view_specs[:1])
    rotated, rotation_labels = pretext.four_rotations(images)
    features, backbone_stats = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], rotated, train=True)
    logits, _ = self.rotation_head(params["rotation_head"], {}, features, train=True)
    rotation_loss = losses.softmax_cross_entropy(logits, rotation_labels)
    accuracy = (logits.argmax(-1) == rotation_labels).mean()
    metrics = {"rotation_loss": rotation_loss, "rotation_top1": accuracy}
    total = rotation_loss
    if self.num_classes:
      # The probe sees the upright images: every fourth row.
      upright = features[:: pretext.NUM_ROTATIONS]
      probe_loss, probe_accuracy = linear_probe_loss(self.probe, params["probe"], upright, batch["label"])
      total = total + probe_loss
      metrics.update(probe_loss=probe_loss, probe_top1=probe_accuracy)
    return total, {"batch_stats": {"backbone": backbone_stats}, "metrics": metrics}

  def after_update(self, state: TrainState, aux: dict) -> dict:
    del state
    return {"batch_stats": aux["batch_stats"]}

  def embed(self, params, extra, images, *, train: bool = False):
    features, _ = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], images, train=train)
    return features
