"""Two augmented views through one shared network, with no target network.

Barlow Twins, VICReg and SimSiam share everything but their heads and their objective: each view
goes through the same encoder f and projector g (and, for SimSiam, a predictor h), with its own
BatchNorm statistics (one pass over the interleaved views, `models.normalization`), and
gradients flow through both branches.
A subclass names its heads (`_heads`) and its loss on the two views' outputs (`objective`).

A subclass that sets `USES_LOCAL_VIEWS` also takes multi-crop's local crops
(`config.augment.local_views`): they go through the same network in one extra pass (their own
BN batch), and their outputs follow the two global views' in what `objective` receives.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
from flax import nnx

from jaxssl import models
from jaxssl.transforms import augment
from jaxssl.methods import multicrop
from jaxssl.methods.base import TrainState
from jaxssl.methods.common import embedding_std, linear_probe_loss, view_images
from jaxssl.models import functional, normalization


class SiameseMethod:
  """Encoder + heads shared by both views; see the module docstring."""

  # Heads applied in this order after the encoder; a subclass may leave out 'predictor'.
  HEADS: tuple[str, ...] = ("projector",)
  # Whether `objective` takes outputs of local crops after the two global views'.
  USES_LOCAL_VIEWS: bool = False

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0):
    self.config = config
    self.num_classes = num_classes
    self.view_specs = tuple(augment.spec_from_config(c) for c in config.augment.views)
    if len(self.view_specs) != 2:
      raise ValueError(f"config.augment.views has {len(self.view_specs)} views; {config.method} needs exactly 2.")
    self.local_spec = multicrop.local_augment_spec(config.augment)
    if self.local_spec is not None and not self.USES_LOCAL_VIEWS:
      raise ValueError(
          f"{config.method} does not use multi-crop's local crops, but config.augment.local_views.num is "
          f"{config.augment.local_views.num}; set it to 0."
      )
    # Only the static structure is kept; `nnx.eval_shape` traces shapes without drawing weights.
    abstract = nnx.eval_shape(lambda: self._networks(nnx.Rngs(0)))
    self.modules = {name: functional.split_module(m)[0] for name, m in abstract.items()}

  def _heads(self, num_features: int, dtype: Any, rngs: nnx.Rngs) -> dict[str, nnx.Module]:
    """{head name: module} for the names in HEADS."""
    raise NotImplementedError

  def objective(self, outputs: tuple[dict, ...]) -> tuple[jax.Array, dict]:
    """(loss, metrics) from each view's {'projection': ..., 'prediction': ...} outputs.

    The two global views come first, then (with `USES_LOCAL_VIEWS`) one entry per local crop.
    """
    raise NotImplementedError

  def initial_state(self) -> dict:
    """Method state kept next to the batch statistics (none unless a subclass needs some)."""
    return {}

  def complete_outputs(self, outputs: tuple[dict, ...], state: dict) -> tuple[tuple[dict, ...], dict]:
    """Outputs that depend on method state rather than parameters, and the updated state."""
    return outputs, state

  def _networks(self, rngs: nnx.Rngs) -> dict[str, nnx.Module]:
    cfg = self.config.model
    backbone = models.make_backbone(cfg, rngs)
    networks = {"backbone": backbone, **self._heads(backbone.num_features, models.compute_dtype(cfg.dtype), rngs)}
    networks["probe"] = nnx.Linear(backbone.num_features, max(self.num_classes, 1), rngs=rngs)
    return networks

  def init(self, rng: jax.Array) -> tuple[dict, dict]:
    split = {name: functional.split_module(m) for name, m in self._networks(nnx.Rngs(rng)).items()}
    params = {name: p for name, (_, p, _) in split.items()}
    stats = {name: s for name, (_, _, s) in split.items() if name != "probe"}  # a Linear layer has none
    if not self.num_classes:
      del params["probe"]
    return params, {"batch_stats": stats, **self.initial_state()}

  def _forward(self, params, stats, images, views=1):
    """Features and head outputs of one batch of `views` interleaved views, and the batch
    statistics after it (BatchNorm normalises each view on its own)."""
    new_stats = dict(stats)
    x, new_stats["backbone"] = self.modules["backbone"](params["backbone"], stats["backbone"], images, train=True, views=views)
    outputs = {"features": x}
    for name, output_name in zip(self.HEADS, ("projection", "prediction")):
      x, new_stats[name] = self.modules[name](params[name], stats[name], x, train=True, views=views)
      outputs[output_name] = x
    return outputs, new_stats

  def _local_outputs(self, params, stats, local_views, rng):
    """Outputs of each local crop ([B, V, s, s, 3] uint8) from one pass over all of them."""
    batch_size, num_local = local_views.shape[:2]
    flat = local_views.reshape((-1,) + local_views.shape[2:])  # example-major, as stored
    images = augment.normalize(augment.augment_images(rng, flat, self.local_spec))
    outputs, stats = self._forward(params, stats, images)
    per_crop = {k: v.reshape((batch_size, num_local) + v.shape[1:]) for k, v in outputs.items()}
    return [{k: v[:, i] for k, v in per_crop.items()} for i in range(num_local)], stats

  def loss(self, params, extra, batch, rng, step):
    del step
    with_local = self.local_spec is not None and "local_views" in batch
    if with_local:
      rng, local_rng = jax.random.split(rng)
    views = view_images(rng, (batch["view0"], batch["view1"]), self.view_specs)
    # Each view gets its own BN batch statistics, as in the papers' one pass per view; one pass
    # over the interleaved views gives each weight one gradient (`normalization`).
    both, stats = self._forward(params, extra["batch_stats"], normalization.interleave(views), views=len(views))
    per_view = {k: normalization.deinterleave(v, len(views)) for k, v in both.items()}
    outputs = [{k: v[i] for k, v in per_view.items()} for i in range(len(views))]
    if with_local:
      local_outputs, stats = self._local_outputs(params, stats, batch["local_views"], local_rng)
      outputs.extend(local_outputs)
    state = {name: extra[name] for name in self.initial_state()}
    outputs, state = self.complete_outputs(tuple(outputs), state)
    loss, metrics = self.objective(outputs)
    metrics["embedding_std"] = embedding_std(outputs[0]["projection"])
    total = loss
    if self.num_classes:
      probe_loss, probe_accuracy = linear_probe_loss(self.modules["probe"], params["probe"], outputs[0]["features"], batch["label"])
      total = total + probe_loss
      metrics.update(probe_loss=probe_loss, probe_top1=probe_accuracy)
    return total, {"batch_stats": stats, "state": state, "metrics": metrics}

  def after_update(self, state: TrainState, aux: dict) -> dict:
    return {"batch_stats": aux["batch_stats"], **aux["state"]}

  def embed(self, params, extra, images, *, train: bool = False):
    features, _ = self.modules["backbone"](params["backbone"], extra["batch_stats"]["backbone"], images, train=train)
    return features
