"""`builtin:scenes`: ten kinds of object standing in small outdoor scenes.

Made for the pretext tasks, which learn from regularities that photographs have and
`patterns` lacks:

* a canonical upright: sky above, ground below, light from above (a sun in the sky, objects lit
  on top and darker below, a shadow cast on the ground away from the sun), objects standing on
  the ground -- what rotation prediction learns;
* a spatial layout, within the scene and within each object (a roof above walls, a crown above
  a trunk, wheels below a car body) -- what jigsaw and relative-position tasks learn;
* colours that depend on what is drawn (green crowns, brown trunks, red-and-white lighthouses,
  blue, dusk or overcast skies), each with variation -- what colorization learns.

Half of the images are outdoor scenes; the other half are studio shots, the object close up
before a plain two-colour backdrop blended in a random direction, so that the object, not only
the sky, tells which way is up.

The class is the object: tree, pine, house, lighthouse, car, snowman, mushroom, windmill,
flower or cactus. Its position, distance (size), the setting (outdoors or studio), the
horizon's height, the sky, the ground, the sun, clouds, the camera's exposure and white balance,
and pixel noise are drawn at random, independently of the class, so two images of one class
rarely agree pixel for pixel while the object itself keeps its shape, parts and colours. Mirror
images keep the class (each object is drawn facing left or right at random). Images are drawn
at twice the requested size and averaged down, so edges are anti-aliased.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = (
    'tree',
    'pine',
    'house',
    'lighthouse',
    'car',
    'snowman',
    'mushroom',
    'windmill',
    'flower',
    'cactus',
)
SPLIT_SIZES = {'train': 5000, 'test': 1000}

# Object height as a fraction of the image, before the distance and per-image scale.
_HEIGHTS = (0.6, 0.65, 0.5, 0.75, 0.3, 0.5, 0.4, 0.7, 0.45, 0.55)
_SUPERSAMPLE = 2
_CHUNK = 256  # images rendered at once (bounds the memory of the supersampled canvas)
_NOISE = 0.03  # pixel noise std, in [0, 1] intensity units
# Images that are studio shots instead of outdoor scenes. Without them the sky alone tells the
# upright: RotNet then solved rotations at 99.8% from colour and learned nothing of the objects
# (kNN 18.6 against random init 19.9).
_STUDIO_FRACTION = 0.5

# Sky (top, horizon) colours of a clear day, a dusk and an overcast sky.
_SKIES = np.array([
    [[0.25, 0.5, 0.9], [0.7, 0.85, 1.0]],
    [[0.3, 0.25, 0.55], [1.0, 0.6, 0.35]],
    [[0.55, 0.58, 0.62], [0.8, 0.8, 0.82]],
], np.float32)
# Grass, sand, soil and snow.
_GROUNDS = np.array([[0.3, 0.6, 0.2], [0.85, 0.75, 0.5], [0.45, 0.33, 0.2], [0.92, 0.93, 0.96]], np.float32)
_FLOWER_PETALS = np.array([[0.9, 0.1, 0.15], [1.0, 0.85, 0.1], [1.0, 0.55, 0.75], [0.6, 0.25, 0.8], [0.97, 0.97, 0.97], [1.0, 0.5, 0.1]], np.float32)
_HOUSE_WALLS = np.array([[0.93, 0.9, 0.8], [0.95, 0.85, 0.5], [0.75, 0.55, 0.4], [0.7, 0.75, 0.82]], np.float32)


def _jitter(rng: np.random.Generator, colour, n: int, amount: float = 0.06) -> np.ndarray:
  """`n` copies of an RGB colour, each moved by a small random amount: [n, 3]."""
  colour = np.broadcast_to(np.asarray(colour, np.float32), (n, 3))
  return np.clip(colour + rng.uniform(-amount, amount, (n, 3)).astype(np.float32), 0.0, 1.0)


def _disc(u, v, cu, cv, radius):
  return (u - cu) ** 2 + (v - cv) ** 2 < radius**2


def _box(u, v, u_half, v_low, v_high, u_centre=0.0):
  return (np.abs(u - u_centre) < u_half) & (v >= v_low) & (v < v_high)


def _triangle(u, v, half_base, v_low, v_high):
  """An upright isosceles triangle: base `2 * half_base` at `v_low`, apex at `v_high`."""
  rise = (v - v_low) / (v_high - v_low)
  return (rise >= 0) & (rise < 1) & (np.abs(u) < half_base * (1 - rise))


def _object_layers(label: int, u, v, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
  """The object of class `label` as (mask [m, r, r], colour [m, 3]) layers, painted in order.

  `u`, `v`: horizontal and vertical coordinates in object heights, from the object's foot
  (v = 0 on the ground, v = 1 at the top; u = 0 on its axis).
  """
  m = u.shape[0]
  brown = _jitter(rng, (0.42, 0.27, 0.14), m)
  if label == 0:  # tree: a round crown on a trunk
    return [(_box(u, v, 0.06, 0.0, 0.45), brown),
            (_disc(u, v, 0.0, 0.66, 0.32), _jitter(rng, (0.22, 0.52, 0.16), m, 0.1))]
  if label == 1:  # pine: three stacked tiers on a short trunk
    tiers = [_triangle(u, v, 0.34 - 0.07 * k, 0.15 + 0.27 * k, 0.6 + 0.27 * k) for k in range(3)]
    return [(_box(u, v, 0.05, 0.0, 0.2), brown), (tiers[0] | tiers[1] | tiers[2], _jitter(rng, (0.06, 0.33, 0.16), m))]
  if label == 2:  # house: walls, a pitched roof, a door and a window
    side = rng.choice([-1.0, 1.0], (m, 1, 1)).astype(np.float32)
    walls = _HOUSE_WALLS[rng.integers(0, len(_HOUSE_WALLS), m)]
    return [(_box(u, v, 0.36, 0.0, 0.55), _jitter(rng, walls, m, 0.04)),
            (_triangle(u, v, 0.46, 0.55, 1.0), _jitter(rng, (0.65, 0.18, 0.12), m)),
            (_box(u, v, 0.07, 0.0, 0.3, 0.15 * side), _jitter(rng, (0.35, 0.2, 0.1), m)),
            (_box(u, v, 0.08, 0.25, 0.41, -0.15 * side), _jitter(rng, (0.6, 0.8, 0.95), m))]
  if label == 3:  # lighthouse: a tapered red-and-white striped tower under a lamp
    tower = (np.abs(u) < 0.13 - 0.05 * v) & (v >= 0) & (v < 0.82)
    red_band = (np.floor(v / 0.82 * 5) % 2) == 0
    return [(tower & red_band, _jitter(rng, (0.85, 0.12, 0.12), m)),
            (tower & ~red_band, _jitter(rng, (0.95, 0.95, 0.95), m, 0.03)),
            (_box(u, v, 0.15, 0.82, 0.86), _jitter(rng, (0.2, 0.2, 0.2), m)),
            (_box(u, v, 0.08, 0.86, 0.95), _jitter(rng, (1.0, 0.9, 0.4), m)),
            (_triangle(u, v, 0.11, 0.95, 1.02), _jitter(rng, (0.2, 0.2, 0.2), m))]
  if label == 4:  # car: a body of any colour, a cabin with windows, two wheels
    paint = np.clip(rng.uniform(0.0, 1.0, (m, 3)).astype(np.float32) ** 1.5 * 1.2, 0.0, 1.0)
    cabin = (np.abs(u) < 0.6 - 0.4 * (v - 0.55)) & (v >= 0.5) & (v < 1.0)
    windows = (np.abs(u) < 0.5 - 0.4 * (v - 0.6)) & (v >= 0.6) & (v < 0.92) & (np.abs(u) > 0.05)
    wheels = _disc(np.abs(u), v, 0.62, 0.17, 0.17)
    return [(_box(u, v, 1.0, 0.15, 0.55) | cabin, paint), (windows, _jitter(rng, (0.55, 0.7, 0.8), m)),
            (wheels, _jitter(rng, (0.08, 0.08, 0.08), m, 0.03)), (_disc(np.abs(u), v, 0.62, 0.17, 0.07), _jitter(rng, (0.7, 0.7, 0.7), m))]
  if label == 5:  # snowman: three stacked balls, a hat and a carrot nose
    body = _disc(u, v, 0.0, 0.2, 0.2) | _disc(u, v, 0.0, 0.5, 0.15) | _disc(u, v, 0.0, 0.74, 0.11)
    hat = _box(u, v, 0.09, 0.83, 1.0) | _box(u, v, 0.15, 0.83, 0.86)
    nose = (u > 0.0) & (u < 0.14) & (np.abs(v - 0.74) < 0.025 * (1 - u / 0.14))
    buttons = _disc(u, v, 0.0, 0.46, 0.025) | _disc(u, v, 0.0, 0.55, 0.025)
    return [(body, _jitter(rng, (0.95, 0.95, 0.97), m, 0.03)), (hat | buttons, _jitter(rng, (0.08, 0.08, 0.1), m, 0.03)),
            (nose, _jitter(rng, (1.0, 0.5, 0.1), m))]
  if label == 6:  # mushroom: a spotted cap on a pale stem
    cap = ((u / 0.45) ** 2 + ((v - 0.5) / 0.45) ** 2 < 1) & (v >= 0.5)
    spots = cap & (_disc(u, v, -0.2, 0.66, 0.06) | _disc(u, v, 0.15, 0.78, 0.06) | _disc(u, v, 0.0, 0.88, 0.05) | _disc(u, v, 0.3, 0.6, 0.05))
    cap_colour = np.where(rng.random((m, 1)) < 0.7, _jitter(rng, (0.85, 0.12, 0.1), m), _jitter(rng, (0.6, 0.35, 0.2), m))
    return [(_box(u, v, 0.11, 0.0, 0.55), _jitter(rng, (0.92, 0.88, 0.75), m, 0.04)), (cap, cap_colour),
            (spots, _jitter(rng, (0.97, 0.97, 0.95), m, 0.03))]
  if label == 7:  # windmill: a tapered tower and four sails at a random angle
    angle = rng.uniform(0.0, np.pi / 2, (m, 1, 1)).astype(np.float32)
    du, dv = u, v - 0.72
    sails = np.zeros(u.shape, bool)
    for k in range(4):
      a = angle + k * np.pi / 2
      along, across = du * np.cos(a) + dv * np.sin(a), -du * np.sin(a) + dv * np.cos(a)
      sails |= (along > 0.04) & (along < 0.45) & (np.abs(across) < 0.05)
    tower_colour = np.where(rng.random((m, 1)) < 0.5, _jitter(rng, (0.85, 0.82, 0.78), m), _jitter(rng, (0.6, 0.35, 0.25), m))
    return [((np.abs(u) < 0.16 - 0.08 * v) & (v >= 0) & (v < 0.72), tower_colour),
            (_triangle(u, v, 0.11, 0.7, 0.82), _jitter(rng, (0.3, 0.22, 0.18), m)),
            (sails, _jitter(rng, (0.5, 0.35, 0.2), m)), (_disc(u, v, 0.0, 0.72, 0.04), _jitter(rng, (0.15, 0.15, 0.15), m))]
  if label == 8:  # flower: petals of one colour around a yellow heart, on a leafy stem
    petal_colour = _jitter(rng, _FLOWER_PETALS[rng.integers(0, len(_FLOWER_PETALS), m)], m, 0.05)
    petals = np.zeros(u.shape, bool)
    for k in range(6):
      petals |= _disc(u, v, 0.13 * np.cos(k * np.pi / 3), 0.8 + 0.13 * np.sin(k * np.pi / 3), 0.085)
    leaf = ((u - 0.09) / 0.09) ** 2 + ((v - 0.32) / 0.035) ** 2 < 1
    green = _jitter(rng, (0.2, 0.55, 0.2), m)
    return [(_box(u, v, 0.025, 0.0, 0.75) | leaf, green), (petals, petal_colour), (_disc(u, v, 0.0, 0.8, 0.07), _jitter(rng, (0.85, 0.65, 0.1), m))]
  if label == 9:  # cactus: a column with two raised arms
    body = _box(u, v, 0.1, 0.0, 0.9) | _disc(u, v, 0.0, 0.9, 0.1)
    left = (u > -0.3) & (u < -0.05) & (v > 0.38) & (v < 0.47) | _box(u, v, 0.05, 0.38, 0.68, -0.26) | _disc(u, v, -0.26, 0.68, 0.05)
    right = (u > 0.05) & (u < 0.28) & (v > 0.5) & (v < 0.59) | _box(u, v, 0.05, 0.5, 0.76, 0.24) | _disc(u, v, 0.24, 0.76, 0.05)
    return [(body | left | right, _jitter(rng, (0.24, 0.52, 0.28), m))]
  raise ValueError(f'No scene class {label}; there are {len(CLASS_NAMES)}.')


def _paint(canvas: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
  """Sets the masked pixels of `canvas` [m, r, r, 3] to each image's `colour` [m, 3], in place."""
  np.copyto(canvas, np.broadcast_to(colour[:, None, None, :], canvas.shape), where=mask[..., None])


def _render_chunk(labels: np.ndarray, size: int, rng: np.random.Generator, studio_fraction: float) -> np.ndarray:
  n, r = len(labels), size * _SUPERSAMPLE
  t = (np.arange(r, dtype=np.float32) + 0.5) / r
  y, x = t[None, :, None], t[None, None, :]
  uniform = lambda low, high: rng.uniform(low, high, (n, 1, 1)).astype(np.float32)

  # Sky: a gradient from the zenith to a paler horizon; then a sun and up to two clouds.
  horizon = uniform(0.4, 0.8)
  sky = _SKIES[rng.integers(0, len(_SKIES), n)] + rng.uniform(-0.06, 0.06, (n, 2, 3)).astype(np.float32)
  height = np.clip(y / horizon, 0.0, 1.0)[..., None]  # [n, r, 1, 1]
  canvas = np.broadcast_to(sky[:, None, None, 0] + height * (sky[:, None, None, 1] - sky[:, None, None, 0]), (n, r, r, 3)).copy()
  sun_x, sun_y = uniform(0.08, 0.92), horizon * uniform(0.1, 0.45)
  has_sun = rng.random((n, 1, 1)) < 0.7
  _paint(canvas, has_sun & _disc(x, y, sun_x, sun_y, uniform(0.05, 0.08)), _jitter(rng, (1.0, 0.95, 0.7), n, 0.04))
  for _ in range(2):
    cloud_x, cloud_y, width = uniform(0.0, 1.0), horizon * uniform(0.1, 0.5), uniform(0.08, 0.18)
    cloud = (rng.random((n, 1, 1)) < 0.5) & (((x - cloud_x) / width) ** 2 + ((y - cloud_y) / (0.4 * width)) ** 2 < 1)
    _paint(canvas, cloud, _jitter(rng, (0.93, 0.93, 0.95), n, 0.05))

  # Ground: hazier (closer to the horizon's colour) with distance.
  ground = np.clip(_GROUNDS[rng.integers(0, len(_GROUNDS), n)] + rng.uniform(-0.07, 0.07, (n, 3)).astype(np.float32), 0, 1)
  depth = np.clip((y - horizon) / (1 - horizon), 0.0, 1.0)[..., None]  # 0 at the horizon, 1 at the bottom
  haze = 0.35 * (1 - depth) * (sky[:, None, None, 1] - ground[:, None, None, :])
  below = np.broadcast_to(y >= horizon, (n, r, r))
  np.copyto(canvas, ground[:, None, None, :] + haze, where=below[..., None])

  # Studio shots: the object before a backdrop of two random colours blended along a random
  # direction, with no sky or ground to give the upright away; only the object shows it.
  studio = rng.random((n, 1, 1)) < studio_fraction
  backdrop = rng.uniform(0.0, 1.0, (n, 2, 3)).astype(np.float32)
  direction = uniform(0.0, 2 * np.pi)
  blend = np.clip(0.5 + (x - 0.5) * np.cos(direction) + (y - 0.5) * np.sin(direction), 0.0, 1.0)[..., None]
  np.copyto(canvas, backdrop[:, None, None, 0] + blend * (backdrop[:, None, None, 1] - backdrop[:, None, None, 0]), where=studio[..., None])
  has_sun &= ~studio
  below = below | studio

  # The object stands on the ground; nearer objects (lower foot) are larger.
  foot_depth = uniform(0.3, 0.9)
  foot = np.where(studio, uniform(0.8, 0.95), horizon + foot_depth * (1 - horizon))
  foot_depth = np.where(studio, 1.0, foot_depth)  # studio objects are close up
  scale = np.asarray(_HEIGHTS, np.float32)[labels][:, None, None] * uniform(0.7, 1.2) * (0.75 + 0.4 * foot_depth)
  scale = np.minimum(scale, foot - 0.03)
  centre = uniform(0.15, 0.85)
  facing = np.where(rng.random((n, 1, 1)) < 0.5, -1.0, 1.0).astype(np.float32)
  u = np.broadcast_to(facing * (x - centre) / scale, (n, r, r))
  v = np.broadcast_to((foot - y) / scale, (n, r, r))

  # A shadow on the ground, cast away from the sun (straight down when there is none).
  shadow_shift = np.where(has_sun, (0.5 - sun_x) * 0.6 * scale, 0.0)
  shadow = ((x - centre - shadow_shift) / (0.45 * scale)) ** 2 + ((y - foot) / 0.025) ** 2 < 1
  canvas *= np.where(shadow & below, 0.6, 1.0)[..., None].astype(np.float32)

  object_mask = np.zeros((n, r, r), bool)
  for label in range(len(CLASS_NAMES)):
    rows = np.flatnonzero(labels == label)
    if not rows.size:
      continue
    part = canvas[rows]
    for mask, colour in _object_layers(label, u[rows], v[rows], rng):
      _paint(part, mask, colour)
      object_mask[rows] |= mask
    canvas[rows] = part
  # Light from above: objects are brightest at the top and shaded toward the ground.
  lighting = np.where(object_mask, 0.72 + 0.35 * np.clip(v, 0.0, 1.0), 1.0)
  # The camera's exposure and white balance: a random gain per channel.
  canvas *= lighting[..., None] * rng.uniform(0.7, 1.15, (n, 1, 1, 3)).astype(np.float32)
  canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(_NOISE)
  # Average each 2x2 block of the supersampled canvas.
  canvas = canvas.reshape(n, size, _SUPERSAMPLE, size, _SUPERSAMPLE, 3).mean((2, 4))
  return np.rint(np.clip(canvas, 0.0, 1.0) * 255.0).astype(np.uint8)


def render_scenes(labels: np.ndarray, size: int, rng: np.random.Generator, studio_fraction: float = _STUDIO_FRACTION) -> np.ndarray:
  """Draws one scene with an object of class `labels[i]` per image: uint8[N, size, size, 3].

  A `studio_fraction` of the images show the object before a plain backdrop instead of outdoors.
  """
  images = np.empty((len(labels), size, size, 3), np.uint8)
  for start in range(0, len(labels), _CHUNK):
    images[start:start + _CHUNK] = _render_chunk(labels[start:start + _CHUNK], size, rng, studio_fraction)
  return images
