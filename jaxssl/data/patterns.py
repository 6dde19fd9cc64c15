"""`builtin:patterns`: ten classes of procedurally drawn two-colour patterns.

Every image is one periodic pattern (stripes, checks, dots, rings, ...) drawn in two random
colours, at a random frequency (2-6 cycles per image), phase and small rotation, with pixel
noise. The class is the pattern's geometry, which every crop of the image shows; what differs
between two images of a class is exactly what random-resized crops and colour jitter vary:
colour, phase (position) and scale. So:

* raw pixels are weak (about 33% kNN): two images of a class rarely line up pixel for pixel;
* a randomly initialised network is weak (about 15%): its pooled features are dominated by the
  two colours;
* a network trained to match crops under colour jitter recovers the class.

Unlike the digit sets, nothing but the pattern survives colour jitter, so a short CPU run is
enough to see a self-supervised method learn. All classes are mirror-symmetric up to phase, so
horizontal flips keep the class.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = (
    'horizontal stripes',
    'vertical stripes',
    'checkerboard',
    'dots',
    'rings',
    'grid',
    'zigzag',
    'waves',
    'diamonds',
    'crosses',
)
SPLIT_SIZES = {'train': 5000, 'test': 1000}

_FREQUENCY = (2.0, 6.0)  # cycles per image side
_MAX_ROTATION = 0.3  # radians
_NOISE = 0.1  # pixel noise std, in [0, 1] intensity units


def _cell(t: np.ndarray) -> np.ndarray:
  """Signed offset from the centre of the unit cell containing `t`, in [-0.5, 0.5)."""
  return t - np.floor(t) - 0.5


def _field(label: int, fu: np.ndarray, fv: np.ndarray, ring: np.ndarray, wave: np.ndarray) -> np.ndarray:
  """Signed pattern value (> 0: foreground) of one class on coordinates measured in cycles.

  `fu`, `fv`: horizontal and vertical coordinate times frequency, plus phase; `ring`: distance
  to the rings' centre times frequency; `wave`: the waves' amplitude, in cycles.
  """
  tau = 2.0 * np.pi
  du, dv = _cell(fu), _cell(fv)
  if label == 0:  # horizontal stripes
    return np.sin(tau * fv)
  if label == 1:  # vertical stripes
    return np.sin(tau * fu)
  if label == 2:  # checkerboard, one square per half period
    return np.sin(np.pi * fu) * np.sin(np.pi * fv)
  if label == 3:  # dots on a square lattice
    return 0.09 - du**2 - dv**2
  if label == 4:  # concentric rings
    return np.sin(tau * ring)
  if label == 5:  # thin grid lines
    return np.maximum(np.abs(du), np.abs(dv)) - 0.38
  if label == 6:  # zigzag rows
    return np.sin(tau * (fv + 0.6 * 2.0 * np.abs(du)))
  if label == 7:  # wavy vertical stripes
    return np.sin(tau * (fu + wave * np.sin(np.pi * fv)))
  if label == 8:  # checkerboard rotated by 45 degrees
    return np.sin(np.pi * (fu + fv) / 1.4) * np.sin(np.pi * (fu - fv) / 1.4)
  if label == 9:  # plus signs on a square lattice
    return np.where((np.minimum(np.abs(du), np.abs(dv)) < 0.1) & (np.maximum(np.abs(du), np.abs(dv)) < 0.35), 1.0, -1.0)
  raise ValueError(f'No pattern class {label}; there are {len(CLASS_NAMES)}.')


def render_patterns(labels: np.ndarray, size: int, rng: np.random.Generator, contrasting_colours) -> np.ndarray:
  """Draws one pattern of class `labels[i]` per image: uint8[N, size, size, 3].

  `contrasting_colours(background_luma, rng)` returns foreground colours [N, 3] whose luminance
  differs enough from the background's.
  """
  n = len(labels)
  centred = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
  y, x = np.meshgrid(centred, centred, indexing='ij')
  angle = rng.uniform(-_MAX_ROTATION, _MAX_ROTATION, (n, 1, 1)).astype(np.float32)
  u = x * np.cos(angle) - y * np.sin(angle)
  v = x * np.sin(angle) + y * np.cos(angle)
  frequency = rng.uniform(*_FREQUENCY, (n, 1, 1)).astype(np.float32)
  phase = rng.uniform(0.0, 1.0, (2, n, 1, 1)).astype(np.float32)
  centre = rng.uniform(-0.7, 0.7, (2, n, 1, 1)).astype(np.float32)
  fu = frequency * u + phase[0]
  fv = frequency * v + phase[1]
  ring = frequency * np.hypot(u - centre[0], v - centre[1]) + phase[0]
  wave = rng.uniform(0.1, 0.25, (n, 1, 1)).astype(np.float32)

  value = np.empty((n, size, size), np.float32)
  for label in range(len(CLASS_NAMES)):
    rows = labels == label
    if rows.any():
      value[rows] = _field(label, fu[rows], fv[rows], ring[rows], wave[rows])
  # Edges from soft (a sine's ramp) to hard, at random.
  sharpness = rng.uniform(4.0, 12.0, (n, 1, 1)).astype(np.float32)
  alpha = np.clip(0.5 + sharpness * value, 0.0, 1.0)

  luma = np.array([0.299, 0.587, 0.114], np.float32)
  background = rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32)
  foreground = contrasting_colours(background @ luma, rng)
  images = background[:, None, None, :] + alpha[..., None] * (foreground - background)[:, None, None, :]
  images += rng.standard_normal(images.shape, dtype=np.float32) * np.float32(_NOISE)
  images = np.rint(np.clip(images, 0.0, 1.0) * 255.0)
  return images.astype(np.uint8)
