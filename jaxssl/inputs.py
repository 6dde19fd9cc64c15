"""What a method asks of the host pipeline, declared as data.

Methods never import host-side data code. A method that needs more than the image crops of
`config.augment.views` (every image method's default) declares its inputs with the descriptions
here, as its `host_inputs` attribute, and `jaxssl.train` builds the grain transform and the
evaluation arrays from that declaration (`jaxssl.data.video` for clips).

  ClipViews   one narrow clip and K broad views of a video (frames, motion, flow or audio),
              optionally with the narrow clip's own audio; evaluation embeds centred narrow clips.
  ImagesWithFramePairs
              the image crops of `config.augment.views`, and with each record two frames of a
              video from a second dataset (multi-task's motion segmentation); evaluation embeds
              images.
"""

from __future__ import annotations

import dataclasses
from typing import Any

MODALITIES = ("rgb", "motion", "flow", "audio")


@dataclasses.dataclass(frozen=True)
class ClipViewSpec:
  """One view of a video: which frames, at which size, of which modality.

  Attributes:
    modality: 'rgb' (frames), 'motion' (frames; differenced on device), 'flow' (the record's
      precomputed optical flow) or 'audio' (the waveform of the clip's time window).
    num_frames: frames in the clip (for audio: the clip whose time window is heard).
    stride: take every `stride`-th frame.
    size: output height and width in pixels (ignored for audio).
    crop_scale: area range of the random crop, the same box for every frame (scale jitter).
    flip_prob: probability of flipping the whole clip horizontally.
  """

  modality: str = "rgb"
  num_frames: int = 16
  stride: int = 1
  size: int = 32
  crop_scale: tuple[float, float] = (0.3, 1.0)
  flip_prob: float = 0.5

  def __post_init__(self):
    if self.modality not in MODALITIES:
      raise ValueError(f"Clip view modality '{self.modality}' is not known; choose one of {MODALITIES}.")
    if self.num_frames < 1 or self.stride < 1:
      raise ValueError(f"A clip view needs num_frames >= 1 and stride >= 1, got {self.num_frames} and {self.stride}.")


def clip_view_spec(cfg: Any) -> ClipViewSpec:
  """The `ClipViewSpec` of one view's config (`modality`, `num_frames`, `stride`, `size`, ...)."""
  return ClipViewSpec(
      modality=cfg.modality,
      num_frames=int(cfg.num_frames),
      stride=int(cfg.stride),
      size=int(cfg.size),
      crop_scale=tuple(cfg.crop_scale),
      flip_prob=float(cfg.flip_prob),
  )


@dataclasses.dataclass(frozen=True)
class ClipViews:
  """A narrow clip and broad views per video record (BraVe, GDT).

  Attributes:
    narrow: the narrow view, also what evaluation embeds (centred, deterministic).
    broad: the broad views; they share one time window, each seen through its own modality.
      May be empty when `narrow_audio` is set.
    synced_starts: start the narrow and broad windows at the same frame (an ablation in BraVe).
    audio_sample_rate: the rate the method's spectrograms assume (0: no audio view); the data's
      rate must match it.
    narrow_audio: also return the audio of the narrow clip's own time window, as
      'narrow_audio' (GDT pairs every clip with the sound that starts with it).
  """

  narrow: ClipViewSpec
  broad: tuple[ClipViewSpec, ...]
  synced_starts: bool = False
  audio_sample_rate: int = 0
  narrow_audio: bool = False


@dataclasses.dataclass(frozen=True)
class ImagesWithFramePairs:
  """The image crops of `config.augment.views` and, beside them in each record, two frames `gap`
  apart of a video of another dataset, centre-cropped and resized to `size` px, as
  'frame_pair' uint8[2, size, size, 3]: a still and a later frame whose difference shows what in
  the still moves. Record i takes video i mod V of that dataset's training split, at a start
  drawn per record, so the pairing follows the image pipeline's order (and its resumption).

  Attributes:
    video_data: the video dataset's `config.data.name`, e.g. 'builtin:moving_shapes'.
    size: the frames' height and width in pixels.
    gap: frames between the still and the later frame.
  """

  video_data: str
  size: int
  gap: int = 2
