"""What every host-side data module shares: the parsed data description, its error, subsets.

`config.data` is parsed once, by `DataSpec.from_config`, into a typed description whose defaults
are written here and nowhere else; sources receive its fields as explicit arguments.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


class DataError(ValueError):
  """A user-fixable data problem; the message names the cause and the fix."""


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """`config.data`, parsed.

  Attributes:
    name: the source, e.g. 'builtin:patterns', 'tfds:cifar10', 'folder:/path'.
    kind: 'image' or 'video' (clip sources, `jaxssl.data.video`).
    train_split, eval_split: split names.
    image_size: the size built-in images are rendered at (and evaluation images resized to).
    seed: seed of the built-in data's random rendering.
    data_dir: TFDS data directory (None: TFDS's default).
    image_key, label_key: TFDS feature names of image sources (label_key None: unlabelled).
    download: let TFDS download and prepare a missing dataset.
    train_examples: pretrain on this many evenly spaced records (0: all).
    video_key, audio_key, flow_key, fps: TFDS video features and the frame rate.
    audio_sample_rate: the audio track's rate, or the rate to resample it to (None: the
      source's default: 0 (no audio) for TFDS, 16 kHz for video files).
  """

  name: str
  kind: str = "image"
  train_split: str = "train"
  eval_split: str = "test"
  image_size: int = 32
  seed: int = 0
  data_dir: str | None = None
  image_key: str = "image"
  label_key: str | None = "label"
  download: bool = False
  train_examples: int = 0
  video_key: str = "video"
  audio_key: str = "audio"
  flow_key: str = "flow"
  fps: float = 25.0
  audio_sample_rate: int | None = None

  @classmethod
  def from_config(cls, config: Any) -> "DataSpec":
    """From `config.data` (a ConfigDict, a dict or a DataSpec); missing or None keys take the
    defaults above (label_key may be None on purpose: unlabelled data)."""
    if isinstance(config, DataSpec):
      return config
    get = config.get if hasattr(config, "get") else lambda key, default=None: getattr(config, key, default)
    values = {}
    for field in dataclasses.fields(cls):
      value = get(field.name, None)
      if value is not None or field.name == "label_key" and _has_key(config, "label_key"):
        values[field.name] = value
    if "name" not in values:
      raise DataError("config.data.name is not set; name a source, e.g. 'builtin:patterns'.")
    spec = cls(**values)
    return dataclasses.replace(
        spec,
        image_size=int(spec.image_size or 32),
        seed=int(spec.seed or 0),
        download=bool(spec.download),
        train_examples=int(spec.train_examples or 0),
        fps=float(spec.fps or 25.0),
    )


def _has_key(config: Any, key: str) -> bool:
  try:
    return key in config
  except TypeError:
    return hasattr(config, key)


def evenly_spaced_indices(num_records: int, count: int) -> np.ndarray:
  """`count` distinct indices spread evenly over [0, num_records), in increasing order.

  Spread rather than the first `count`, so that a split stored sorted by class keeps every class.
  """
  return np.round(np.linspace(0, num_records - 1, int(count))).astype(np.int64)
