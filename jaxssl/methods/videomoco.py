"""VideoMoCo: momentum contrast for video with adversarial frame dropping and temporal decay
(Pan, Zhu, Sun, Gao, Ding, Wang, Chen, Zhao 2021).

MoCo on clips. Query and key are the same frames of a video, each seen through its own random
crop (and colour jitter); the key comes from a momentum encoder and is enqueued. Two additions:

Adversarial frame dropping. A generator G scores the importance of every frame of the query
clip; the `drop_fraction` of frames it scores lowest (25%: 8 of 32) are replaced by constant
frames (each frame's mean), and the encoder must still find its key. G plays against the
encoder on the SAME contrastive loss: the encoder minimises L_NCE(masked query, key), G
maximises it. The two players are `jaxssl.methods.base.Player`s of one train step, so every
gradient's direction is explicit: the encoder's modules get dL/dtheta, G's modules get
d(-L)/dphi, and nothing else reaches either.

Temporal decay. A key enqueued long ago was made by an older encoder, so it is a less reliable
negative. Each queue slot keeps its age in enqueues (1 for the keys written by the last step);
its logit is q . k- * t^age before the temperature (t = 0.99999 in the official code).

Follows the paper and departs from the official code (tinapan-pt/VideoMoCo) in three places:
- The generator's objective is the negated contrastive loss (the paper's min-max). The code's
  generator maximises 100 x L1(enc(G(q)), enc(q)) instead, and its contrastive loss also flows
  into G through the straight-through top-k without its gradients being cleared, so as written G
  partly MINIMISES the contrastive loss too. That leak is the bug the two-player contract rules out.
- The generator is a per-frame convolutional trunk (shared over frames), a bidirectional LSTM
  over time and a linear score per frame, then a softmax over frames. The paper describes a
  ConvLSTM; the code stacks 32 frames as 96 input channels (so it takes exactly 32 frames) before
  a bi-LSTM. We keep the code's bi-LSTM (the part that relates frames to each other, cheap on
  every device) and make the trunk per-frame, so any clip length works, and it is far cheaper
  than a ConvLSTM on CPU clips.
- The straight-through estimator passes d(output)/d(score_t) = frame_t - mean_t (a kept frame
  moves away from its constant replacement as its score rises). The code passes 1 for every
  pixel, a gradient blind to what the frame holds.
Colour jitter and flips are drawn per clip; the code's kornia augmentation runs on B*T frames,
so every frame of a clip gets a different jitter and flip, which is most likely unintended.

The generator sees and drops frames of what the encoder sees: RGB frames, or, on the CPU
presets' motion clips, frame differences. A constant difference frame is a moment without
motion; a dropped RGB frame differenced afterwards would instead put that frame's appearance
into two difference frames (on :quick that hurt: experiments/README.md).

The paper trains plain MoCo for the first half (`adversarial_start_step`): before it no frame is
dropped and G's objective is zero.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from jaxssl import inputs, losses, models
from jaxssl.errors import UserError
from jaxssl.methods import dictionaries
from jaxssl.methods.base import Player, TrainState
from jaxssl.methods.common import embedding_std, linear_probe_loss
from jaxssl.methods.moco import ProjectionHead
from jaxssl.models import functional
from jaxssl.models import video as video_models
from jaxssl.transforms import augment, clip_ops

_ENCODER_PARTS = ("backbone", "head")
GENERATOR = "generator"
# 'motion' (frame differences) is for short CPU runs, as in BraVe's and GDT's CPU presets.
_CLIP_MODALITIES = ("rgb", "motion")


class FrameImportanceGenerator(nnx.Module):
  """Clip [B, T, H, W, 3] -> frame importance [B, T] (a softmax over frames).

  A convolutional trunk shared by every frame (two stride-2 3x3 convolutions, ReLU, global
  average pool), a bidirectional LSTM over time (hidden units split between the directions, as
  the official 128 = 2 x 64), and a linear score per frame.
  """

  def __init__(self, width: int, hidden: int, *, dtype=None, rngs: nnx.Rngs):
    if hidden % 2:
      raise UserError(f"config.videomoco.generator_hidden={hidden} must be even: it is split between the LSTM's two directions.")
    conv = lambda i, o: nnx.Conv(i, o, (3, 3), strides=2, dtype=dtype, rngs=rngs)
    self.conv1, self.conv2 = conv(3, width), conv(width, width)
    direction = lambda: nnx.RNN(nnx.LSTMCell(width, hidden // 2, rngs=rngs), rngs=False)
    self.temporal = nnx.Bidirectional(direction(), direction(), rngs=False)
    self.hidden_per_direction = hidden // 2
    self.score = nnx.Linear(hidden, 1, rngs=rngs)

  def __call__(self, clips: jax.Array) -> jax.Array:
    batch, frames = clips.shape[:2]
    x = clips.reshape((batch * frames,) + clips.shape[2:])
    x = nnx.relu(self.conv2(nnx.relu(self.conv1(x))))
    # The LSTM runs in float32 (or the parameters' wider type): its carry must keep one type.
    dtype = jnp.promote_types(jnp.float32, self.score.kernel[...].dtype)
    x = jnp.mean(x, axis=(1, 2)).reshape(batch, frames, -1).astype(dtype)
    zeros = jnp.zeros((batch, self.hidden_per_direction), dtype)
    carry = (zeros, zeros)  # an LSTM's (cell, hidden) state, zero at the start of each direction
    scores = self.score(self.temporal(x, initial_carry=(carry, carry)))[..., 0]
    return jax.nn.softmax(scores, axis=-1)


def num_dropped_frames(num_frames: int, drop_fraction: float) -> int:
  """Frames the generator drops from a clip of `num_frames` (8 of 32 at the paper's 25%)."""
  dropped = int(round(drop_fraction * num_frames))
  if not 0 < dropped < num_frames:
    raise UserError(
        f"config.videomoco.drop_fraction={drop_fraction} drops {dropped} of {num_frames} frames; "
        f"choose a fraction that drops at least one frame and keeps at least one (the paper: 0.25)."
    )
  return dropped


def drop_frames(clips: jax.Array, importance: jax.Array, num_dropped: int) -> tuple[jax.Array, jax.Array]:
  """Replaces the `num_dropped` least important frames of each clip by constant frames.

  Args:
    clips: [B, T, H, W, C] float clips.
    importance: [B, T] the generator's frame scores.
    num_dropped: frames to drop per clip.
  Returns:
    (clips with the dropped frames replaced by their mean value, dropped [B, T] 0/1). The keep
    mask is straight-through: its forward value is the hard 0/1 decision, its gradient the
    identity onto `importance`, so d(output)/d(importance_t) = frame_t - mean(frame_t).
  """
  _, lowest = jax.lax.top_k(-importance, num_dropped)
  dropped = jnp.sum(jax.nn.one_hot(lowest, clips.shape[1], dtype=importance.dtype), axis=1)
  keep = (1.0 - dropped) + (importance - jax.lax.stop_gradient(importance))  # exactly 0 or 1 forwards
  keep = keep[:, :, None, None, None].astype(clips.dtype)
  frame_means = jnp.mean(clips, axis=(2, 3, 4), keepdims=True)
  return keep * clips + (1.0 - keep) * frame_means, dropped


class VideoMoCo:
  """VideoMoCo as pure functions; see the module docstring."""

  eval_input_key = "clip"  # evaluation embeds centred RGB clips with the video backbone
  # The queue's keys and their ages are split over devices by rows.
  row_sharded_extra = (("queue", "keys"), ("queue", "age"))

  def __init__(self, config: ml_collections.ConfigDict, num_classes: int = 0):
    self.config = config
    self.num_classes = num_classes
    cfg = config.videomoco
    dictionaries.check_queue_size(cfg.queue_size, config.batch_size)
    if not 0.0 < cfg.temporal_decay <= 1.0:
      raise UserError(f"config.videomoco.temporal_decay={cfg.temporal_decay} must lie in (0, 1]; 1 turns the decay off (official: 0.99999).")
    self.num_groups = cfg.bn_groups if cfg.shuffle_bn else 1
    dictionaries.check_groups(config.batch_size, self.num_groups)
    self.clip_view = inputs.clip_view_spec(cfg.clip)
    if self.clip_view.modality not in _CLIP_MODALITIES:
      raise UserError(f"config.videomoco.clip.modality is '{self.clip_view.modality}'; use one of {_CLIP_MODALITIES}.")
    # The generator drops frames of what the encoder sees: RGB frames, or frame differences.
    input_frames = self.clip_view.num_frames - (1 if self.clip_view.modality == "motion" else 0)
    self.num_dropped = num_dropped_frames(input_frames, cfg.drop_fraction)
    # Query ('narrow') and key ('broad0') are the same frames, each through its own crop and flip.
    frames = dataclasses.replace(self.clip_view, modality="rgb")
    self.host_inputs = inputs.ClipViews(frames, (frames,), synced_starts=True)
    self.clip_augment = augment.spec_from_config(cfg.clip.augment)
    # The generator plays against the encoder with the run's optimizer.
    self.players = {GENERATOR: Player(modules=(GENERATOR,), objective=GENERATOR)}
    abstract = nnx.eval_shape(lambda: self._networks(nnx.Rngs(0)))
    self.backbone, self.head, self.generator, self.probe = (functional.split_module(m)[0] for m in abstract)

  def make_backbone(self, rngs: nnx.Rngs) -> nnx.Module:
    """The video backbone: what evaluation embeds with and what a run exports."""
    cfg, dtype = self.config.videomoco, models.compute_dtype(self.config.model.dtype)
    return video_models.make_video_backbone(
        video_models.VideoBackboneConfig(name=cfg.video_backbone, width_multiplier=cfg.video_width_multiplier, dtype=dtype), rngs
    )

  def _networks(self, rngs: nnx.Rngs):
    """(video backbone, projection head, frame-importance generator, probe)."""
    cfg, model = self.config.videomoco, self.config.model
    dtype = models.compute_dtype(model.dtype)
    backbone = self.make_backbone(rngs)
    hidden = model.projector_hidden_dim if model.mlp_head else 0
    head = ProjectionHead(
        backbone.num_features, hidden, model.projection_dim, batch_norm=model.get("head_batch_norm", False), dtype=dtype, rngs=rngs
    )
    generator = FrameImportanceGenerator(cfg.generator_width, cfg.generator_hidden, dtype=dtype, rngs=rngs)
    probe = nnx.Linear(backbone.num_features, max(self.num_classes, 1), rngs=rngs)
    return backbone, head, generator, probe

  def init(self, rng: jax.Array) -> tuple[dict, dict]:
    network_rng, queue_rng = jax.random.split(rng)
    names = ("backbone", "head", GENERATOR, "probe")
    _, params, stats = zip(*(functional.split_module(m) for m in self._networks(nnx.Rngs(network_rng))))
    params = dict(zip(names, params))
    if not self.num_classes:
      del params["probe"]
    extra = {"batch_stats": {"backbone": stats[0], "head": stats[1]}}
    # The key encoder starts as an exact copy of the query encoder.
    extra["key_params"] = {k: jax.tree.map(jnp.array, params[k]) for k in _ENCODER_PARTS}
    extra["key_batch_stats"] = jax.tree.map(jnp.array, extra["batch_stats"])
    extra["queue"] = dictionaries.init_queue(queue_rng, self.config.videomoco.queue_size, self.config.model.projection_dim, track_age=True)
    return params, extra

  # -- inputs and encoders ---------------------------------------------------------------------

  def backbone_input(self, clips: jax.Array) -> jax.Array:
    """The backbone's input from normalised RGB clips: the clips, or their frame differences."""
    return clip_ops.frame_differences(clips) if self.clip_view.modality == "motion" else clips

  def _encoder(self, params: dict, stats: dict):
    """backbone inputs (`backbone_input`) -> ((features, projection), batch stats) for one (sub-)batch."""

    def encode(inputs):
      features, backbone_stats = self.backbone(params["backbone"], stats["backbone"], inputs, train=True)
      projection, head_stats = self.head(params["head"], stats["head"], features, train=True)
      return (features, projection), {"backbone": backbone_stats, "head": head_stats}

    return encode

  def masked_queries(self, params: dict, clips: jax.Array, adversarial: jax.Array) -> tuple[jax.Array, dict]:
    """(query inputs, metrics): the generator's frame dropping once `adversarial`, else `clips`
    (the backbone's inputs: RGB frames or frame differences) unchanged."""
    importance, _ = self.generator(params[GENERATOR], {}, clips, train=True)
    masked, dropped = drop_frames(clips, importance, self.num_dropped)
    metrics = {
        "dropped_fraction": jnp.mean(dropped) * adversarial,
        # 1 for uniform scores, 0 when one frame takes all the importance.
        "importance_entropy": -jnp.mean(jnp.sum(importance * jnp.log(importance + 1e-12), axis=-1)) / jnp.log(clips.shape[1]),
    }
    return jnp.where(adversarial, masked, clips), metrics

  # -- loss and state update -------------------------------------------------------------------

  def loss(self, params, extra, batch, rng, step):
    cfg = self.config.videomoco
    query_rng, key_rng, shuffle_rng = jax.random.split(rng, 3)
    normalize = lambda key, frames: augment.normalize(clip_ops.augment_clips(key, frames, self.clip_augment))
    query_clips = self.backbone_input(normalize(query_rng, batch["narrow"]))
    key_clips = self.backbone_input(normalize(key_rng, batch["broad0"]))
    adversarial = jnp.asarray(step) >= cfg.adversarial_start_step
    query_clips, metrics = self.masked_queries(params, query_clips, adversarial)
    (features, projection), stats = dictionaries.apply_in_groups(self._encoder(params, extra["batch_stats"]), query_clips, self.num_groups)
    key_encoder = self._encoder(extra["key_params"], extra["key_batch_stats"])
    if self.num_groups == 1:
      (_, key_projection), key_stats = key_encoder(key_clips)
    else:
      (_, key_projection), key_stats = dictionaries.apply_shuffled_in_groups(key_encoder, key_clips, self.num_groups, shuffle_rng)
    queries = losses.l2_normalize(projection)
    keys = jax.lax.stop_gradient(losses.l2_normalize(key_projection))  # the momentum encoder is not differentiated
    queue = extra["queue"]
    decay = dictionaries.temporal_decay_weights(queue["age"], cfg.temporal_decay)
    contrastive = losses.info_nce(queries, keys, queue["keys"], cfg.temperature, negative_weights=decay)
    metrics.update(moco_loss=contrastive, embedding_std=embedding_std(projection), min_decay_weight=jnp.min(decay))
    total = contrastive
    if self.num_classes:
      probe_loss, probe_accuracy = linear_probe_loss(self.probe, params["probe"], features, batch["label"])
      total = total + probe_loss
      metrics.update(probe_loss=probe_loss, probe_top1=probe_accuracy)
    # The generator maximises the contrastive loss the encoder minimises (zero before the
    # adversarial phase, so it does not move).
    objectives = {GENERATOR: -contrastive * adversarial}
    return total, {"batch_stats": stats, "key_batch_stats": key_stats, "keys": keys, "objectives": objectives, "metrics": metrics}

  def after_update(self, state: TrainState, aux: dict) -> dict:
    online = {k: state.params[k] for k in _ENCODER_PARTS}
    return {
        "batch_stats": aux["batch_stats"],
        "key_params": dictionaries.momentum_update(state.extra["key_params"], online, self.config.videomoco.momentum),
        "key_batch_stats": aux["key_batch_stats"],
        "queue": dictionaries.enqueue(state.extra["queue"], aux["keys"]),
    }

  def embed(self, params, extra, clips, *, train: bool = False):
    """Video-backbone features of normalised RGB clips [B, T, H, W, 3]."""
    features, _ = self.backbone(params["backbone"], extra["batch_stats"]["backbone"], self.backbone_input(clips), train=train)
    return features
