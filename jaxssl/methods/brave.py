"""BraVe: Broaden your Views for self-supervised video learning (Recasens et al. 2021).

A narrow view (a short, high-resolution RGB clip) and K broad views (long, low-resolution clips
seen as RGB, motion or audio) of the same video go through their own backbones f_n, f_b^k; ONE
projector g and ONE predictor h, shared by every view and modality, map features to a common
space, and each side regresses the other's normalised projection:

  L = sum_k ||norm(h(g(f_n))) - sg(norm(g(f_b^k)))||^2 + ||norm(h(g(f_b^k))) - sg(norm(g(f_n)))||^2

There is no EMA target: the stop-gradient on projections, the predictor (trained with a 10x
learning rate) and the asymmetry between narrow and broad views keep it from collapsing. The
narrow backbone is the representation that is evaluated and exported.
"""

from __future__ import annotations

import jax
import ml_collections
from flax import nnx

from jaxssl import inputs, losses, models
from jaxssl.transforms import audio, augment, clip_ops
from jaxssl.errors import UserError
from jaxssl.methods.base import TrainState
from jaxssl.methods.common import embedding_std, linear_probe_loss
from jaxssl.models import functional
from jaxssl.models import audio as audio_models
from jaxssl.models import video as video_models
from jaxssl.models.heads import MLPHead


def _video_backbone(view_config, modality: str, dtype, rngs: nnx.Rngs) -> nnx.Module:
  return video_models.make_video_backbone(
      video_models.VideoBackboneConfig(
          name=view_config.backbone,
          width_multiplier=view_config.width_multiplier,
          in_features=2 if modality == "flow" else 3,
          stem=view_config.get("stem", "imagenet"),
          dtype=dtype,
      ),
      rngs,
  )


# The paper's narrow view is RGB. 'motion' (differences of the RGB frames) is for short CPU runs:
# on the built-in data a small network fed RGB clips does not find the motion within a few
# hundred steps even with labels, while the same network fed frame differences does (see
# experiments/README.md).
_NARROW_MODALITIES = ("rgb", "motion")


class BraVe:
  """BraVe as pure functions; see the module docstring for the equations."""

  eval_input_key = "clip"  # evaluation embeds narrow-view clips, not images

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0):
    self.config = config
    self.num_classes = num_classes
    cfg = config.brave
    self.narrow_view = inputs.clip_view_spec(cfg.narrow)
    if self.narrow_view.modality not in _NARROW_MODALITIES:
      raise UserError(
          f"config.brave.narrow.modality is '{self.narrow_view.modality}', but the narrow view is seen as frames; "
          f"use one of {_NARROW_MODALITIES}."
      )
    self.broad_views = tuple(inputs.clip_view_spec(v) for v in cfg.broad_views)
    has_audio = any(v.modality == "audio" for v in self.broad_views)
    # What the loop feeds this method: the views per record, and centred narrow clips to evaluate.
    self.host_inputs = inputs.ClipViews(self.narrow_view, self.broad_views, cfg.synced_starts, config.audio.sample_rate if has_audio else 0)
    if not self.broad_views:
      raise UserError("config.brave.broad_views is empty; BraVe needs at least one broad view (e.g. modality 'motion' or 'audio').")
    # Per-clip photometric augmentation of every visual view; audio views use SpecAugment.
    self.narrow_augment = augment.spec_from_config(cfg.narrow.augment)
    self.broad_augments = tuple(augment.spec_from_config(v.augment) for v in cfg.broad_views)
    self.spectrogram = audio.SpectrogramSpec(
        sample_rate=config.audio.sample_rate,
        frame_length=config.audio.frame_length,
        frame_step=config.audio.frame_step,
        num_mel_bins=config.audio.num_mel_bins,
    )
    abstract = nnx.eval_shape(lambda: self._networks(nnx.Rngs(0)))
    self.backbone, broad, self.projector, self.predictor, self.probe = (
        tuple(functional.split_module(m)[0] for m in x) if isinstance(x, tuple) else functional.split_module(x)[0]
        for x in abstract
    )
    self.broad_backbones = broad

  def make_backbone(self, rngs: nnx.Rngs) -> nnx.Module:
    """The narrow view's backbone: what evaluation embeds with and what a run exports."""
    return _video_backbone(self.config.brave.narrow, "rgb", models.compute_dtype(self.config.model.dtype), rngs)

  def _networks(self, rngs: nnx.Rngs):
    """(narrow backbone, broad backbones, shared projector, shared predictor, probe)."""
    cfg, model = self.config.brave, self.config.model
    dtype = models.compute_dtype(model.dtype)
    narrow = self.make_backbone(rngs)
    broad = []
    for view_config, view in zip(cfg.broad_views, self.broad_views):
      if view.modality == "audio":
        broad.append(audio_models.make_audio_backbone(view_config.backbone, view_config.width_multiplier, dtype, rngs))
      else:
        broad.append(_video_backbone(view_config, view.modality, dtype, rngs))
    dims = [narrow.num_features] + [b.num_features for b in broad]
    if len(set(dims)) != 1:
      raise UserError(
          f"The narrow and broad backbones give features of sizes {dims}, but BraVe's projector is shared by all views; "
          "choose backbones and width multipliers in config.brave that give the same feature size."
      )
    projector = MLPHead(dims[0], model.projector_hidden_dim, model.projection_dim, dtype=dtype, rngs=rngs)
    predictor = MLPHead(model.projection_dim, model.predictor_hidden_dim, model.projection_dim, dtype=dtype, rngs=rngs)
    probe = nnx.Linear(dims[0], max(self.num_classes, 1), rngs=rngs)
    return narrow, tuple(broad), projector, predictor, probe

  # --- the method ----------------------------------------------------------------------------

  def init(self, rng: jax.Array) -> tuple[dict, dict]:
    narrow, broad, projector, predictor, probe = self._networks(nnx.Rngs(rng))
    split = lambda m: functional.split_module(m)[1:]
    params, stats = {}, {}
    params["backbone"], stats["backbone"] = split(narrow)
    parts = [split(b) for b in broad]
    params["broad"], stats["broad"] = [p for p, _ in parts], [s for _, s in parts]
    params["projector"], stats["projector"] = split(projector)
    params["predictor"], stats["predictor"] = split(predictor)
    if self.num_classes:
      params["probe"] = split(probe)[0]
    return params, {"batch_stats": stats}

  def broad_inputs(self, rng: jax.Array, view: inputs.ClipViewSpec, spec: augment.AugmentSpec, data: jax.Array) -> jax.Array:
    """The backbone input of one broad view from its host data, per modality."""
    if view.modality == "audio":
      spectrograms = audio.log_mel_spectrogram(data, self.spectrogram)
      a = self.config.audio
      return audio.spec_augment(rng, spectrograms, a.time_masks, a.time_mask_width, a.freq_masks, a.freq_mask_width)
    if view.modality == "flow":
      return clip_ops.standardize_flow(data)
    clips = augment.normalize(clip_ops.augment_clips(rng, data, spec))
    return clip_ops.frame_differences(clips) if view.modality == "motion" else clips

  def _heads(self, params, stats, features):
    """Shared projector and predictor; BN statistics are threaded through every call."""
    projection, stats["projector"] = self.projector(params["projector"], stats["projector"], features, train=True)
    prediction, stats["predictor"] = self.predictor(params["predictor"], stats["predictor"], projection, train=True)
    return prediction, projection

  def loss(self, params, extra, batch, rng, step):
    del step
    stats = dict(extra["batch_stats"])
    keys = jax.random.split(rng, 1 + len(self.broad_views))
    narrow_clips = augment.normalize(clip_ops.augment_clips(keys[0], batch["narrow"], self.narrow_augment))
    narrow_features, stats["backbone"] = self.backbone(params["backbone"], stats["backbone"], self.backbone_input(narrow_clips), train=True)
    narrow = self._heads(params, stats, narrow_features)
    broad, broad_stats = [], []
    for k, (view, spec, backbone) in enumerate(zip(self.broad_views, self.broad_augments, self.broad_backbones)):
      view_input = self.broad_inputs(keys[1 + k], view, spec, batch[f"broad{k}"])
      features, new_stats = backbone(params["broad"][k], stats["broad"][k], view_input, train=True)
      broad_stats.append(new_stats)
      broad.append(self._heads(params, stats, features))
    stats["broad"] = broad_stats
    loss = losses.brave_loss(narrow, tuple(broad))
    metrics = {"brave_loss": loss, "embedding_std": embedding_std(narrow[1])}
    total = loss
    if self.num_classes:
      probe_loss, probe_accuracy = linear_probe_loss(self.probe, params["probe"], narrow_features, batch["label"])
      total = total + probe_loss
      metrics.update(probe_loss=probe_loss, probe_top1=probe_accuracy)
    return total, {"batch_stats": stats, "metrics": metrics}

  def after_update(self, state: TrainState, aux: dict) -> dict:
    del state  # no target network: only the batch statistics change outside the gradient step
    return {"batch_stats": aux["batch_stats"]}

  def backbone_input(self, clips):
    """The narrow backbone's input from normalised RGB clips: the clips, or their frame differences."""
    return clip_ops.frame_differences(clips) if self.narrow_view.modality == "motion" else clips

  def embed(self, params, extra, clips, *, train: bool = False):
    """Narrow-backbone features of normalised RGB clips [B, T, H, W, 3]."""
    features, _ = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], self.backbone_input(clips), train=train)
    return features
