"""Video and audio-visual data: clip sources, clip sampling and host-side clip views.

Every video source is random-access (grain's `RandomAccessDataSource`) and returns records

    {'video': uint8[F, H, W, 3], 'label': np.int32,
     'audio': float32[S] (mono, in [-1, 1]; optional),
     'flow': float32[F, H, W, 2] (precomputed optical flow; optional)}

and knows its `fps`, `audio_sample_rate` (0 without audio), `has_labels` and `num_classes`.

`ClipViewsTransform` turns a record into BraVe's views: one narrow clip and K broad views
(RGB frames, precomputed flow or an audio crop), each drawn with one random crop and flip for
all frames of the clip (per clip, not per frame). Clips shorter than the video loop it, as
BraVe pads its broad views. All randomness comes from the generator grain hands to the
transform, so views are a pure function of (seed, record position) and the iterator state
stays a single batch counter.

`make_video_source(data_config, split)` picks the source from `config.data.name`:
`builtin:moving_shapes` (offline, see `builtin_av`), `tfds:<name>` (e.g. `tfds:ucf101`, read
with `tfds.data_source`), or `folder:<path>` (video files decoded with PyAV, one sub-folder per
class).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np
from PIL import Image

from jaxssl.data import views as views_lib
from jaxssl.inputs import ClipViews, ClipViewSpec, ImagesWithFramePairs
from jaxssl.data.base import DataError, DataSpec, evenly_spaced_indices

VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mkv', '.mov', '.webm')


# ----------------------------------------------------------------------------------------------
# Clip sampling: which frames and which audio samples a clip covers.
# ----------------------------------------------------------------------------------------------


def clip_span(num_frames: int, stride: int) -> int:
  """Number of video frames from a clip's first to its last frame, inclusive."""
  return (num_frames - 1) * stride + 1


def sample_start(rng: np.random.Generator, video_frames: int, num_frames: int, stride: int) -> int:
  """A uniformly random first frame such that the clip fits; 0 when it cannot (it then loops)."""
  room = video_frames - clip_span(num_frames, stride)
  return int(rng.integers(0, room + 1)) if room > 0 else 0


def clip_frame_indices(video_frames: int, num_frames: int, stride: int, start: int) -> np.ndarray:
  """Frame indices of a clip; a clip longer than the video loops it (BraVe's broad-view padding)."""
  if video_frames < 1:
    raise DataError('A video has no frames; remove it from the dataset.')
  return (start + stride * np.arange(num_frames)) % video_frames


def audio_window(start_frame: int, num_frames: int, stride: int, fps: float, sample_rate: int) -> tuple[int, int]:
  """(first sample, number of samples) of the audio covering a clip's time window.

  A clip of `num_frames` frames taken every `stride` frames from `start_frame` covers
  [start_frame / fps, (start_frame + num_frames * stride) / fps) seconds.
  """
  first = int(round(start_frame * sample_rate / fps))
  length = int(round(num_frames * stride * sample_rate / fps))
  return first, length


def crop_audio(audio: np.ndarray, first: int, length: int) -> np.ndarray:
  """`length` samples from `first`, looping the track when it is too short (as frames do)."""
  if len(audio) == 0:
    return np.zeros(length, np.float32)
  return audio[(first + np.arange(length)) % len(audio)].astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Host-side clip views.
# ----------------------------------------------------------------------------------------------


def _resize_frames(frames: np.ndarray, size: int, box: tuple[float, float, float, float], flip: bool) -> np.ndarray:
  """Crops the same (left, top, right, bottom) box of every frame and resizes it to size x size."""
  out = np.empty((len(frames), size, size, frames.shape[-1]), frames.dtype)
  for i, frame in enumerate(frames):
    if frames.dtype == np.uint8:
      out[i] = np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BILINEAR, box=box))
    else:  # flow: resize each float channel; displacements scale with the image
      for c in range(frame.shape[-1]):
        channel = Image.fromarray(np.ascontiguousarray(frame[..., c]), mode='F')
        out[i, ..., c] = np.asarray(channel.resize((size, size), Image.Resampling.BILINEAR, box=box))
  if frames.dtype != np.uint8:
    out[..., 0] *= size / max(box[2] - box[0], 1e-6)
    out[..., 1] *= size / max(box[3] - box[1], 1e-6)
    if flip:
      out[..., 0] *= -1.0  # horizontal motion reverses under a horizontal flip
  return out[:, :, ::-1] if flip else out


def spatial_view(frames: np.ndarray, spec: ClipViewSpec, rng: np.random.Generator) -> np.ndarray:
  """One random crop (scale jitter) and one flip decision, applied to every frame of a clip."""
  height, width = frames.shape[1:3]
  top, left, crop_h, crop_w = views_lib.crop_box(height, width, rng, scale=spec.crop_scale)
  flip = bool(rng.random() < spec.flip_prob)
  return np.ascontiguousarray(_resize_frames(frames, spec.size, (left, top, left + crop_w, top + crop_h), flip))


def center_view(frames: np.ndarray, size: int) -> np.ndarray:
  """The largest centred square of every frame, resized to size x size (for evaluation)."""
  height, width = frames.shape[1:3]
  side = min(height, width)
  top, left = (height - side) // 2, (width - side) // 2
  return _resize_frames(frames, size, (left, top, left + side, top + side), flip=False)


def make_clip_view(record: dict, spec: ClipViewSpec, start: int, fps: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
  """The view `spec` of `record` for a clip starting at frame `start`."""
  video = record['video']
  if spec.modality == 'audio':
    if 'audio' not in record or not sample_rate:
      raise DataError('A view asks for audio but the dataset has none; use a dataset with an audio track, or remove the audio view from the method\'s config.')
    first, length = audio_window(start, spec.num_frames, spec.stride, fps, sample_rate)
    return crop_audio(record['audio'], first, length)
  index = clip_frame_indices(len(video), spec.num_frames, spec.stride, start)
  if spec.modality == 'flow':
    if 'flow' not in record:
      raise DataError("A view asks for precomputed optical flow but the dataset has none; use modality 'motion' (frame differences) instead.")
    return spatial_view(record['flow'][index].astype(np.float32), spec, rng)
  return spatial_view(video[index], spec, rng)


class ClipViewsTransform(grain.transforms.RandomMap):
  """Record -> {'narrow': clip, ['narrow_audio': audio,] 'broad0': view, ..., 'label'}.

  The narrow and broad windows get independent random start times (BraVe's default); with
  `synced_starts` both start at the same frame, the ablation the paper finds harmful.
  All broad views share one time window, each seen through its own modality. With
  `narrow_audio`, the audio of the narrow clip's window comes too (GDT's clip and its sound).
  """

  def __init__(self, narrow: ClipViewSpec, broad: Sequence[ClipViewSpec], fps: float, sample_rate: int, synced_starts: bool = False,
               narrow_audio: bool = False):
    self.narrow = narrow
    self.broad = tuple(broad)
    self.fps = fps
    self.sample_rate = sample_rate
    self.synced_starts = synced_starts
    self.narrow_audio = narrow_audio

  def random_map(self, record: dict, rng: np.random.Generator) -> dict:
    frames = len(record['video'])
    # The draws come in a fixed order (starts, then crops), so a record's views depend only on its seed.
    narrow_start = sample_start(rng, frames, self.narrow.num_frames, self.narrow.stride)
    broad_start = narrow_start
    if self.broad and not self.synced_starts:
      longest = max(self.broad, key=lambda s: clip_span(s.num_frames, s.stride))
      broad_start = sample_start(rng, frames, longest.num_frames, longest.stride)
    out = {'narrow': make_clip_view(record, self.narrow, narrow_start, self.fps, self.sample_rate, rng)}
    if self.narrow_audio:
      narrow_sound = dataclasses.replace(self.narrow, modality='audio')
      out['narrow_audio'] = make_clip_view(record, narrow_sound, narrow_start, self.fps, self.sample_rate, rng)
    for k, spec in enumerate(self.broad):
      out[f'broad{k}'] = make_clip_view(record, spec, broad_start, self.fps, self.sample_rate, rng)
    out['label'] = np.int32(record['label'])
    return out


def clip_views_transform(request: ClipViews, source: Any) -> ClipViewsTransform:
  """The grain transform making the views a method declared (`jaxssl.inputs.ClipViews`)."""
  rate = int(getattr(source, 'audio_sample_rate', 0) or 0)
  if request.audio_sample_rate and rate != request.audio_sample_rate:
    raise DataError(
        f'The audio of this dataset is sampled at {rate} Hz but config.audio.sample_rate is '
        f'{request.audio_sample_rate}; set config.audio.sample_rate={rate} (or remove the audio view).'
    )
  return ClipViewsTransform(request.narrow, request.broad, source.fps, rate, request.synced_starts, request.narrow_audio)


class FramePairsTransform(grain.transforms.RandomMap):
  """An image record's crops (`image_transform`) and two frames `gap` apart of video
  `index mod V` of `videos`, centred at `size` px: 'frame_pair' uint8[2, size, size, 3]."""

  def __init__(self, image_transform: grain.transforms.RandomMap, videos: Any, size: int, gap: int):
    if len(videos) == 0:
      raise DataError('The video data for the frame pairs is empty; choose a video dataset with a non-empty training split.')
    self.image_transform, self.videos, self.size, self.gap = image_transform, videos, int(size), int(gap)

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    out = self.image_transform.random_map(element, rng)
    video = self.videos[int(element['index']) % len(self.videos)]['video']
    if len(video) <= self.gap:
      raise DataError(f'A video of {len(video)} frames has no two frames {self.gap} apart; lower the frame gap or use longer videos.')
    start = int(rng.integers(0, len(video) - self.gap))
    out['frame_pair'] = center_view(video[[start, start + self.gap]], self.size)
    return out


def frame_pairs_transform(request: ImagesWithFramePairs, image_transform: grain.transforms.RandomMap) -> FramePairsTransform:
  """The grain transform of `jaxssl.inputs.ImagesWithFramePairs`: image crops plus frame pairs."""
  videos = make_video_source({'name': request.video_data}, 'train')
  return FramePairsTransform(image_transform, videos, request.size, request.gap)


def load_clip_eval_arrays(source: Any, spec: ClipViewSpec, max_examples: int | None = None, with_audio: bool = False) -> dict[str, np.ndarray]:
  """Centred clips of the narrow view for kNN / linear evaluation.

  Each clip starts at the frame that centres it in the video (deterministic) and is centre-cropped.
  Returns {'clip': uint8[N, T, S, S, 3], 'label': int32[N]}, and with `with_audio` (and a source
  with audio) 'audio': float32[N, samples], the sound of each clip's time window.
  """
  num_records = len(source)
  if num_records == 0:
    raise DataError('The evaluation data is empty; choose a non-empty split.')
  indices = np.arange(num_records)
  if max_examples and max_examples < num_records:
    indices = evenly_spaced_indices(num_records, max_examples)
  rate = int(getattr(source, 'audio_sample_rate', 0) or 0) if with_audio else 0
  clips, sounds, labels = [], [], []
  for index in indices:
    record = source[int(index)]
    frames = len(record['video'])
    start = max(frames - clip_span(spec.num_frames, spec.stride), 0) // 2
    chosen = record['video'][clip_frame_indices(frames, spec.num_frames, spec.stride, start)]
    clips.append(center_view(chosen, spec.size))
    if rate and 'audio' in record:
      sounds.append(crop_audio(record['audio'], *audio_window(start, spec.num_frames, spec.stride, source.fps, rate)))
    labels.append(np.int32(record['label']))
  arrays = {'clip': np.stack(clips), 'label': np.asarray(labels, np.int32)}
  if sounds and len(sounds) == len(clips):
    arrays['audio'] = np.stack(sounds)
  return arrays


# ----------------------------------------------------------------------------------------------
# Sources.
# ----------------------------------------------------------------------------------------------


def _to_mono_float(audio: np.ndarray) -> np.ndarray:
  """Audio [S], [S, C] or [C, S] of any numeric dtype -> mono float32 in [-1, 1]."""
  audio = np.asarray(audio)
  if np.issubdtype(audio.dtype, np.integer):
    audio = audio.astype(np.float32) / float(np.iinfo(audio.dtype).max)
  audio = audio.astype(np.float32)
  if audio.ndim == 2:
    audio = audio.mean(axis=int(np.argmin(audio.shape)))
  return audio.reshape(-1)


class TfdsVideoSource:
  """A TFDS video dataset (e.g. ucf101, kinetics) read through `tfds.data_source` (ArrayRecord).

  `video_key`, `audio_key` and `flow_key` name the features; missing optional ones are skipped.
  """

  def __init__(self, name: str, split: str, data_dir: str | None = None, video_key: str = 'video', label_key: str = 'label',
               audio_key: str = 'audio', flow_key: str = 'flow', fps: float = 25.0, audio_sample_rate: int = 0, download: bool = False):
    from jaxssl.data import sources  # pylint: disable=g-import-not-at-top

    self.name, self.split = name, split
    self._data = sources._open_tfds(name, split, data_dir, download)  # pylint: disable=protected-access
    features = self._data.dataset_info.features
    if video_key not in features:
      raise DataError(f'TFDS dataset {name!r} has no feature {video_key!r} (its features are {", ".join(sorted(features.keys()))}); set config.data.video_key.')
    self.video_key = video_key
    self.label_key = label_key if label_key in features else None
    self.audio_key = audio_key if audio_key in features else None
    self.flow_key = flow_key if flow_key in features else None
    self.has_labels = self.label_key is not None
    self.num_classes = getattr(features[self.label_key], 'num_classes', None) if self.has_labels else None
    self.fps = float(fps)
    self.audio_sample_rate = int(audio_sample_rate) if self.audio_key else 0

  def __len__(self) -> int:
    return len(self._data)

  def __getitem__(self, index: int) -> dict:
    example = self._data[int(index)]
    video = np.asarray(example[self.video_key])
    if video.shape[-1] == 1:
      video = np.repeat(video, 3, axis=-1)
    record = {'video': video.astype(np.uint8), 'label': np.int32(example[self.label_key] if self.has_labels else -1)}
    if self.audio_key:
      record['audio'] = _to_mono_float(example[self.audio_key])
    if self.flow_key:
      record['flow'] = np.asarray(example[self.flow_key], np.float32)
    return record


def decode_video_file(path: str, audio_sample_rate: int = 16000) -> tuple[np.ndarray, float, np.ndarray]:
  """(frames uint8[F, H, W, 3], fps, mono audio float32[S] resampled to `audio_sample_rate`) with PyAV."""
  import av  # pylint: disable=g-import-not-at-top

  try:
    with av.open(path) as container:
      stream = container.streams.video[0]
      fps = float(stream.average_rate or stream.guessed_rate or 25)
      frames = np.stack([frame.to_ndarray(format='rgb24') for frame in container.decode(video=0)])
    audio = np.zeros(0, np.float32)
    with av.open(path) as container:
      if container.streams.audio and audio_sample_rate:
        resampler = av.AudioResampler(format='flt', layout='mono', rate=audio_sample_rate)
        chunks = [r.to_ndarray().reshape(-1) for frame in container.decode(audio=0) for r in resampler.resample(frame)]
        chunks += [r.to_ndarray().reshape(-1) for r in resampler.resample(None)]
        audio = np.concatenate(chunks).astype(np.float32) if chunks else audio
  except (av.error.FFmpegError, ValueError) as e:
    raise DataError(f'Could not decode video {path!r} ({e}); delete or replace the file.') from e
  return frames, fps, audio


class VideoFolderSource:
  """Video files in a folder (one sub-folder per class, or flat and unlabelled), decoded with PyAV.

  Frames and the audio track (mono, resampled to `audio_sample_rate`) are decoded on access.
  `fps` is read from the first video; all videos are assumed to share it.
  """

  def __init__(self, root: str, audio_sample_rate: int = 16000):
    self.root = os.fspath(root)
    if not os.path.isdir(self.root):
      raise DataError(f'Video folder {self.root!r} does not exist; set config.data.name to "folder:<path>" with an existing folder of videos.')
    list_videos = lambda folder: sorted(
        os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(VIDEO_EXTENSIONS) and not f.startswith('.'))
    subdirs = sorted(e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith('.'))
    paths, labels, classes = [], [], []
    for subdir in subdirs:
      files = list_videos(os.path.join(self.root, subdir))
      if files:
        labels += [len(classes)] * len(files)
        classes.append(subdir)
        paths += files
    if not classes:
      paths = list_videos(self.root)
      labels = [-1] * len(paths)
    if not paths:
      raise DataError(f'Video folder {self.root!r} contains no videos with extensions {", ".join(VIDEO_EXTENSIONS)}; add some (one sub-folder per class).')
    self.paths, self.class_names = tuple(paths), tuple(classes)
    self._labels = np.asarray(labels, np.int32)
    self.has_labels = bool(classes)
    self.num_classes = len(classes) or None
    self.audio_sample_rate = int(audio_sample_rate)
    _, self.fps, _ = decode_video_file(self.paths[0], 0)

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> dict:
    frames, _, audio = decode_video_file(self.paths[int(index)], self.audio_sample_rate)
    record = {'video': frames, 'label': np.int32(self._labels[int(index)])}
    if self.audio_sample_rate:
      record['audio'] = audio
    return record


def make_video_source(data_config: Any, split: str):
  """The video source for `config.data.name` (a `DataSpec` or `config.data`) and `split`."""
  spec = DataSpec.from_config(data_config)
  name = spec.name
  kind, _, rest = str(name).partition(':')
  if kind == 'builtin':
    from jaxssl.data import builtin_av  # pylint: disable=g-import-not-at-top

    return builtin_av.make_builtin_av(rest, split, seed=spec.seed)
  if kind == 'tfds':
    return TfdsVideoSource(
        rest, split, data_dir=spec.data_dir, video_key=spec.video_key, label_key=spec.label_key,
        audio_key=spec.audio_key, flow_key=spec.flow_key, fps=spec.fps,
        audio_sample_rate=spec.audio_sample_rate or 0, download=spec.download)
  if kind == 'folder':
    root = os.path.expanduser(rest)
    if split and os.path.isdir(os.path.join(root, split)):
      root = os.path.join(root, split)
    return VideoFolderSource(root, audio_sample_rate=16000 if spec.audio_sample_rate is None else spec.audio_sample_rate)
  raise DataError(f"config.data.name {name!r} is not a video source; use 'builtin:moving_shapes', 'tfds:<name>' (e.g. tfds:ucf101) or 'folder:<path to videos>'.")
