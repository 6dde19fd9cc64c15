"""GDT: multi-modal self-supervision from generalized data transformations (Patrick et al. 2021).

A generalized data transformation T = (data sampling, time shift, time reversal, modality,
augmentation) maps a video to one sample: which video, which of two time windows, played
forwards or backwards, seen as an RGB clip or heard as a log-mel spectrogram, and augmented.
Each video of the batch gives every combination the hypothesis needs (the official code's
v, vR, v2, v2R and the matching audio), so the global batch holds M = B x transforms x 2
samples. One noise-contrastive loss runs over all M x M pairs (`losses.masked_info_nce`):

  c(T, T') = 1  the pair is positive (same video, different modality, and equal in every
                transformation the representation should be distinctive to);
  w(T, T') = 0  the pair is not compared: pairs of the same modality (GDT compares across
                modalities only), and pairs of one video that differ in an ignored transformation.

`pair_masks` builds both from per-sample descriptors (video, window, reversed, modality) and
two switches, `config.gdt.reversal` and `config.gdt.shift`, each one of
  'invariant'  the same video reversed (or shifted) in the other modality is a positive;
  'variant'    it is a (hard) negative: the representation must tell the two apart;
  'ignore'     the transformation is not sampled (pairs that differ in it are not compared).
A pair of one video that differs in a 'variant' transformation is a negative even if it also
differs in another; the official code's nine hypotheses are `HYPOTHESES`.

Follows the official code (facebookresearch/GDT): the temperature 0.07; two clips per video
at independently drawn times, each also time-reversed (frames flipped, spectrogram flipped
along time); which pairs are positive and which are (hard) negatives per hypothesis; a
separate projection head per modality (Dropout 0.3, Linear 512 no bias, BN, ReLU, Dropout,
Linear 256) on R(2+1)D-18 video and ResNet-9 audio features; every positive competes with the
negatives only, and the v->a and a->v directions weigh the same.

Follows the paper instead:
- ONE loss over every pair of the global batch (the paper's sum over T, T' with c and w). The
  code averages separate losses over pairs of transformations (v with vR, v with v2, ...), and
  draws local negatives differently from remote ones (in its invariant case, the untransformed
  audio of the other videos on the same GPU is never a negative). Under a sharded `jax.jit` the
  global similarity matrix is one matmul, so every device sees the same negatives.
- Gradients flow through both sides of every pair by default. The code detaches keys and
  negatives because its cross-GPU gather cannot backpropagate, not as a design choice (it has
  no momentum encoder or memory bank that would need it). `config.gdt.stop_gradient_keys`
  restores the code's behaviour.
The reversed copy of a clip shares its window's host crop and flip (the code draws a separate
crop for each of the four clips); colour jitter and SpecAugment are drawn per transformed
sample, as in the code.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxssl import inputs, losses, models
from jaxssl.errors import UserError
from jaxssl.methods.base import TrainState
from jaxssl.methods.common import embedding_std, linear_probe_loss
from jaxssl.models import audio as audio_models
from jaxssl.models import functional
from jaxssl.models import video as video_models
from jaxssl.models.heads import GDTHead
from jaxssl.transforms import audio, augment, clip_ops

SWITCHES = ("invariant", "variant", "ignore")

# The official code's `--hypothesis` numbers as (time reversal, time shift) switches.
HYPOTHESES = {
    1: ("ignore", "ignore"),  # basecase: modality and data-sampling invariance only
    2: ("variant", "ignore"),
    3: ("invariant", "ignore"),
    4: ("ignore", "variant"),
    5: ("ignore", "invariant"),
    6: ("variant", "variant"),
    7: ("invariant", "variant"),
    8: ("variant", "invariant"),
    9: ("invariant", "invariant"),
}

VIDEO, AUDIO = 0, 1

# 'motion' (frame differences) is for short CPU runs, as BraVe's narrow view: a small network
# fed RGB clips of the built-in data does not find the motion within a few hundred steps.
_CLIP_MODALITIES = ("rgb", "motion")


def sampled_transforms(reversal: str, shift: str) -> tuple[tuple[int, bool], ...]:
  """(time window, reversed) of each clip a video contributes, in the code's order v, vR, v2, v2R.

  An ignored transformation is not sampled, as in the code's hypotheses 1-5.
  """
  windows = (0,) if shift == "ignore" else (0, 1)
  reversals = (False,) if reversal == "ignore" else (False, True)
  return tuple((window, reversed_) for window in windows for reversed_ in reversals)


def sample_descriptors(batch_size: int, transforms: tuple[tuple[int, bool], ...]) -> dict[str, np.ndarray]:
  """Per-sample (video, window, reversed, modality) in the order the method stacks embeddings:
  modality, then transform, then video (index (m * len(transforms) + t) * batch_size + b)."""
  modality, transform, video = np.meshgrid(np.arange(2), np.arange(len(transforms)), np.arange(batch_size), indexing="ij")
  modality, transform, video = modality.ravel(), transform.ravel(), video.ravel()
  windows = np.asarray([w for w, _ in transforms])
  reversals = np.asarray([r for _, r in transforms], bool)
  return {"video": video, "window": windows[transform], "reversed": reversals[transform], "modality": modality}


def pair_masks(video, window, reversed_, modality, *, reversal: str, shift: str) -> tuple[np.ndarray, np.ndarray]:
  """(positive c, compared w) [M, M] bool masks of GDT's loss from per-sample descriptors.

  See the module docstring: only cross-modal pairs are compared; a pair of the same video is
  positive unless it differs in a 'variant' transformation (then a negative) or in an 'ignore'd
  one (then not compared); pairs of different videos are negatives.
  """
  for name, value in (("reversal", reversal), ("shift", shift)):
    if value not in SWITCHES:
      raise UserError(f"config.gdt.{name} is '{value}'; choose one of {SWITCHES}.")
  pairwise = lambda x: np.asarray(x)[:, None] != np.asarray(x)[None, :]
  cross_modal = pairwise(modality)
  same_video = ~pairwise(video)
  differences = {"reversal": (reversal, pairwise(reversed_)), "shift": (shift, pairwise(window))}
  distinct = np.zeros_like(cross_modal)
  ignored = np.zeros_like(cross_modal)
  for switch, differs in differences.values():
    distinct |= differs & (switch == "variant")
    ignored |= differs & (switch == "ignore")
  positive = cross_modal & same_video & ~distinct & ~ignored
  compared = cross_modal & ~(same_video & ignored & ~distinct)
  return positive, compared


def hypothesis_switches(config: ml_collections.ConfigDict) -> tuple[str, str]:
  """(reversal, shift) of `config.gdt`: its `hypothesis` number (1-9) if set, else the two switches."""
  cfg = config.gdt
  number = int(cfg.get("hypothesis", 0) or 0)
  if number:
    if number not in HYPOTHESES:
      raise UserError(f"config.gdt.hypothesis is {number}; choose 1-9 (the official code's numbering) or 0 to use config.gdt.reversal and .shift.")
    return HYPOTHESES[number]
  return cfg.reversal, cfg.shift


class GDT:
  """GDT as pure functions; see the module docstring for the loss and its masks."""

  eval_input_key = "clip"  # evaluation embeds centred RGB clips with the video backbone

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0):
    self.config = config
    self.num_classes = num_classes
    cfg = config.gdt
    self.reversal, self.shift = hypothesis_switches(config)
    pair_masks(np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1), reversal=self.reversal, shift=self.shift)  # validates
    self.transforms = sampled_transforms(self.reversal, self.shift)
    self.clip_view = inputs.clip_view_spec(cfg.clip)
    if self.clip_view.modality not in _CLIP_MODALITIES:
      raise UserError(f"config.gdt.clip.modality is '{self.clip_view.modality}'; use one of {_CLIP_MODALITIES} (the audio is always heard).")
    # The host gives each video its first clip and that clip's audio ('narrow', 'narrow_audio')
    # and, for the time shift, a second window drawn independently ('broad0' frames, 'broad1' audio).
    frames = dataclasses.replace(self.clip_view, modality="rgb")
    second_window = (frames, dataclasses.replace(frames, modality="audio")) if self.shift != "ignore" else ()
    self.host_inputs = inputs.ClipViews(frames, second_window, synced_starts=False, audio_sample_rate=config.audio.sample_rate, narrow_audio=True)
    self.clip_augment = augment.spec_from_config(cfg.clip.augment)
    self.spectrogram = audio.SpectrogramSpec(
        sample_rate=config.audio.sample_rate,
        frame_length=config.audio.frame_length,
        frame_step=config.audio.frame_step,
        num_mel_bins=config.audio.num_mel_bins,
    )
    abstract = nnx.eval_shape(lambda: self._networks(nnx.Rngs(0)))
    self.backbone, self.audio_backbone, self.video_head, self.audio_head, self.probe = (functional.split_module(m)[0] for m in abstract)

  def make_backbone(self, rngs: nnx.Rngs) -> nnx.Module:
    """The video backbone: what evaluation embeds with and what a run exports."""
    cfg, dtype = self.config.gdt, models.compute_dtype(self.config.model.dtype)
    return video_models.make_video_backbone(
        video_models.VideoBackboneConfig(
            name=cfg.video_backbone, width_multiplier=cfg.video_width_multiplier, stem=cfg.get("video_stem", "imagenet"), dtype=dtype
        ),
        rngs,
    )

  def _networks(self, rngs: nnx.Rngs):
    """(video backbone, audio backbone, video head, audio head, probe)."""
    cfg, model = self.config.gdt, self.config.model
    dtype = models.compute_dtype(model.dtype)
    video = self.make_backbone(rngs)
    sound = audio_models.make_audio_backbone(cfg.audio_backbone, cfg.audio_width_multiplier, dtype, rngs)
    head = lambda features: GDTHead(
        features, model.projector_hidden_dim, model.projection_dim, dropout_rate=model.dropout_rate, dtype=dtype, rngs=rngs
    )
    probe = nnx.Linear(video.num_features, max(self.num_classes, 1), rngs=rngs)
    return video, sound, head(video.num_features), head(sound.num_features), probe

  # --- the method ----------------------------------------------------------------------------

  def init(self, rng: jax.Array) -> tuple[dict, dict]:
    video, sound, video_head, audio_head, probe = self._networks(nnx.Rngs(rng))
    params, stats = {}, {}
    for name, module in (("backbone", video), ("audio_backbone", sound), ("video_head", video_head), ("audio_head", audio_head)):
      params[name], stats[name] = functional.split_module(module)[1:]
    if self.num_classes:
      params["probe"] = functional.split_module(probe)[1]
    return params, {"batch_stats": stats}

  def backbone_input(self, clips: jax.Array) -> jax.Array:
    """The video backbone's input from normalised RGB clips: the clips, or their frame differences."""
    return clip_ops.frame_differences(clips) if self.clip_view.modality == "motion" else clips

  def transformed_clips(self, rng: jax.Array, batch: dict) -> jax.Array:
    """[len(transforms) * B, T, H, W, C]: each transform's clips, reversed along time when it says so,
    with its own colour augmentation (the reversal is applied to frames, before any differencing)."""
    windows = {0: batch["narrow"], 1: batch.get("broad0")}
    clips = []
    for key, (window, reversed_) in zip(jax.random.split(rng, len(self.transforms)), self.transforms):
      frames = jnp.flip(windows[window], axis=1) if reversed_ else windows[window]
      clips.append(self.backbone_input(augment.normalize(clip_ops.augment_clips(key, frames, self.clip_augment))))
    return jnp.concatenate(clips)

  def transformed_spectrograms(self, rng: jax.Array, batch: dict) -> jax.Array:
    """[len(transforms) * B, frames, mel]: each window's log-mel spectrogram (volume jittered),
    flipped along time for reversed transforms, then SpecAugment per transformed sample."""
    a = self.config.audio
    sounds = {0: batch["narrow_audio"], 1: batch.get("broad1")}
    volume_key, mask_key = jax.random.split(rng)
    spectrograms = {}
    for window, key in zip(sorted({w for w, _ in self.transforms}), jax.random.split(volume_key, 2)):
      waveforms = sounds[window]
      gain = jax.random.uniform(key, (waveforms.shape[0], 1), minval=1.0 - a.volume_jitter, maxval=1.0 + a.volume_jitter)
      spectrograms[window] = audio.log_mel_spectrogram(waveforms * gain.astype(waveforms.dtype), self.spectrogram)
    out = []
    for key, (window, reversed_) in zip(jax.random.split(mask_key, len(self.transforms)), self.transforms):
      spectrogram = jnp.flip(spectrograms[window], axis=1) if reversed_ else spectrograms[window]
      out.append(audio.spec_augment(key, spectrogram, a.time_masks, a.time_mask_width, a.freq_masks, a.freq_mask_width))
    return jnp.concatenate(out)

  def masks(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """GDT's (positive, compared) masks for a global batch of `batch_size` videos (static)."""
    d = sample_descriptors(batch_size, self.transforms)
    return pair_masks(d["video"], d["window"], d["reversed"], d["modality"], reversal=self.reversal, shift=self.shift)

  def loss(self, params, extra, batch, rng, step):
    del step
    cfg = self.config.gdt
    stats = dict(extra["batch_stats"])
    video_key, audio_key, video_dropout, audio_dropout = jax.random.split(rng, 4)
    video_features, stats["backbone"] = self.backbone(params["backbone"], stats["backbone"], self.transformed_clips(video_key, batch), train=True)
    audio_features, stats["audio_backbone"] = self.audio_backbone(
        params["audio_backbone"], stats["audio_backbone"], self.transformed_spectrograms(audio_key, batch), train=True
    )
    video_z, stats["video_head"] = self.video_head(params["video_head"], stats["video_head"], video_features, video_dropout, train=True)
    audio_z, stats["audio_head"] = self.audio_head(params["audio_head"], stats["audio_head"], audio_features, audio_dropout, train=True)
    z = losses.l2_normalize(jnp.concatenate([video_z, audio_z]))  # the order of `sample_descriptors`
    keys = jax.lax.stop_gradient(z) if cfg.stop_gradient_keys else z
    similarity = z @ keys.T
    batch_size = batch["narrow"].shape[0]
    positive, compared = self.masks(batch_size)
    loss = losses.masked_info_nce(similarity, jnp.asarray(positive), jnp.asarray(compared), cfg.temperature)
    positives = positive & compared
    metrics = {
        "gdt_loss": loss,
        "embedding_std": embedding_std(video_z),
        "positive_cosine": jnp.sum(jnp.where(positives, similarity, 0.0)) / positives.sum(),
        "negative_cosine": jnp.sum(jnp.where(compared & ~positive, similarity, 0.0)) / max((compared & ~positive).sum(), 1),
    }
    total = loss
    if self.num_classes:
      # The probe watches the untransformed clips (the first transform) of every video.
      probe_loss, probe_accuracy = linear_probe_loss(self.probe, params["probe"], video_features[:batch_size], batch["label"])
      total = total + probe_loss
      metrics.update(probe_loss=probe_loss, probe_top1=probe_accuracy)
    return total, {"batch_stats": stats, "metrics": metrics}

  def after_update(self, state: TrainState, aux: dict) -> dict:
    del state  # no target network or queue: only the batch statistics change outside the gradient step
    return {"batch_stats": aux["batch_stats"]}

  def embed(self, params, extra, clips, *, train: bool = False):
    """Video-backbone features of normalised RGB clips [B, T, H, W, 3]."""
    features, _ = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], self.backbone_input(clips), train=train)
    return features

  def embed_audio(self, params, extra, waveforms, *, train: bool = False):
    """Audio-backbone features of waveforms [B, S] (log-mel spectrograms computed here)."""
    spectrograms = audio.log_mel_spectrogram(waveforms, self.spectrogram)
    features, _ = self.audio_backbone(params["audio_backbone"], extra["batch_stats"]["audio_backbone"], spectrograms, train=train)
    return features
