"""`builtin:moving_shapes`: an offline audio-visual dataset where only motion and sound tell the class.

Each video shows one shape (disk or square, random size and colour) on a random-coloured, noisy
background. The class fixes the shape's path (circles either way round, lines in four
directions, figure eights) and the pitch of a tone that plays along; the tone's loudness follows
the shape's horizontal position, so picture and sound are synchronised. Paths are periodic with
the video's length, so looped clips stay smooth. Everything else (start phase, centre, colours,
shape, size, detuning, noise) is random per video, so raw pixels say little about the class:
a kNN on pixels stays near chance, while a representation of motion or sound does well.

Generated deterministically from (split, seed) with vectorised NumPy in about a second.
"""

from __future__ import annotations

import numpy as np

from jaxssl.data.base import DataError

NUM_CLASSES = 8
NUM_FRAMES = 24  # 2 s at 12 fps; one period of every path
FPS = 12.0
IMAGE_SIZE = 32
AUDIO_SAMPLE_RATE = 8000
SPLIT_SIZES = {'train': 1200, 'test': 400}
_SPLIT_SEEDS = {'train': 0, 'test': 1}
# Tone pitch per class, half an octave apart: 250 Hz ... 2.8 kHz (below the 4 kHz Nyquist limit).
CLASS_PITCHES = 250.0 * 2.0 ** (np.arange(NUM_CLASSES) / 2.0)
TEXTURE_STRENGTH = 20.0  # std of the static background texture, in grey levels
FLICKER_STRENGTH = 6.0  # std of the per-frame sensor noise
RADIUS_RANGE = (2.5, 4.5)  # the shape's radius (half side for squares), in pixels


def class_paths(label: np.ndarray, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Offsets (dx, dy) in [-1, 1] of the shape for class `label` at phase `theta` (radians)."""
  s, c, s2 = np.sin(theta), np.cos(theta), np.sin(2 * theta)
  options = [
      (c, s),  # circle, clockwise on screen (y points down)
      (c, -s),  # circle, counter-clockwise
      (s, 0 * s),  # left-right
      (0 * s, s),  # up-down
      (s, s),  # diagonal
      (s, -s),  # anti-diagonal
      (s, 0.6 * s2),  # horizontal figure eight
      (0.6 * s2, s),  # vertical figure eight
  ]
  dx = np.choose(label, [o[0] for o in options])
  dy = np.choose(label, [o[1] for o in options])
  return dx, dy


def render(labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Videos uint8[N, F, 32, 32, 3] and audio int16[N, S] for the given labels."""
  n = len(labels)
  t = np.arange(NUM_FRAMES) / NUM_FRAMES
  theta = 2 * np.pi * (rng.random((n, 1)) + t[None])  # random start phase
  dx, dy = class_paths(labels[:, None], theta)
  amplitude = rng.uniform(7.0, 10.0, (n, 1))
  centre = IMAGE_SIZE / 2 + rng.uniform(-3.0, 3.0, (n, 2))
  x = centre[:, :1] + amplitude * dx  # [N, F]
  y = centre[:, 1:] + amplitude * dy
  radius = rng.uniform(*RADIUS_RANGE, (n, 1, 1, 1))
  square = rng.random((n, 1, 1, 1)) < 0.5
  x, y, radius = x.astype(np.float32), y.astype(np.float32), radius.astype(np.float32)
  grid = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5
  ox = grid[None, None, None, :] - x[:, :, None, None]  # [N, F, 1, W]
  oy = grid[None, None, :, None] - y[:, :, None, None]  # [N, F, H, 1]
  distance = np.where(square, np.maximum(np.abs(ox), np.abs(oy)), np.sqrt(ox**2 + oy**2))
  mask = np.clip(radius + 0.5 - distance, 0.0, 1.0)[..., None]  # anti-aliased edge
  background = rng.uniform(0, 255, (n, 1, 1, 1, 3)).astype(np.float32)
  # Static texture and per-frame sensor noise, drawn from small banks (drawing fresh noise for
  # every pixel of every frame would dominate the generation time).
  bank = rng.standard_normal((256, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
  texture = TEXTURE_STRENGTH * bank[rng.integers(0, 256, (n, 1))]
  # The shape's colour differs from the background by at least 80 levels in some channel.
  colour = (background + rng.choice([-1, 1], (n, 1, 1, 1, 3)) * rng.uniform(80, 160, (n, 1, 1, 1, 3))) % 256
  colour = colour.astype(np.float32)
  flicker = FLICKER_STRENGTH * bank[rng.integers(0, 256, (n, NUM_FRAMES))]
  video = (1 - mask) * (background + texture) + mask * colour + flicker
  video = np.clip(np.rint(video), 0, 255).astype(np.uint8)

  samples = int(NUM_FRAMES / FPS * AUDIO_SAMPLE_RATE)
  time = np.arange(samples) / AUDIO_SAMPLE_RATE
  pitch = CLASS_PITCHES[labels][:, None] * rng.uniform(0.97, 1.03, (n, 1))
  tone = np.sin(2 * np.pi * pitch * time[None] + rng.uniform(0, 2 * np.pi, (n, 1)))
  # Loudness follows the shape's horizontal offset, interpolated from frame to audio rate.
  frame_time = np.arange(NUM_FRAMES) / FPS
  loudness = np.stack([np.interp(time, frame_time, row, period=NUM_FRAMES / FPS) for row in dx])
  audio = 0.3 * (1.0 + 0.8 * loudness) * tone + 0.05 * rng.standard_normal((n, samples), dtype=np.float32)
  audio = np.clip(audio, -1, 1)
  return {'video': video, 'audio': (audio * 32767).astype(np.int16)}


class MovingShapesSource:
  """Random access to one split of `builtin:moving_shapes` (records as in `jaxssl.data.video`)."""

  fps = FPS
  audio_sample_rate = AUDIO_SAMPLE_RATE
  num_classes = NUM_CLASSES
  has_labels = True

  def __init__(self, split: str, seed: int = 0):
    base = split.split('[')[0]
    if base not in SPLIT_SIZES:
      raise DataError(f"builtin:moving_shapes has no split {split!r}; use 'train' or 'test'.")
    rng = np.random.default_rng([_SPLIT_SEEDS[base], int(seed)])
    size = SPLIT_SIZES[base]
    self.labels = (np.arange(size) % NUM_CLASSES).astype(np.int32)
    rng.shuffle(self.labels)
    chunks = [render(self.labels[i : i + 200], rng) for i in range(0, size, 200)]
    self.videos = np.concatenate([c['video'] for c in chunks])
    self.audio = np.concatenate([c['audio'] for c in chunks])

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    return {
        'video': self.videos[index],
        'audio': self.audio[index].astype(np.float32) / 32767.0,
        'label': self.labels[index],
    }


DATASETS = {'moving_shapes': MovingShapesSource}


def make_builtin_av(name: str, split: str, seed: int = 0):
  if name not in DATASETS:
    raise DataError(f"There is no built-in audio-visual dataset {name!r}; use one of {sorted(DATASETS)}.")
  return DATASETS[name](split, seed)
