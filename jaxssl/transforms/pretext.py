"""Device-side constructions of the pretext tasks: the inputs and labels a task is trained on.

Cheap array indexing inside the jitted step, laid out so that each example's derived inputs stay
next to it along the batch axis: a batch sharded over devices by examples stays sharded the same
way after the construction, with no data moved between devices.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

NUM_ROTATIONS = 4


def four_rotations(images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """All four rotations of every image, in one batch (RotNet's `rotate_img`, Gidaris et al. 2018).

  Args:
    images: [B, H, H, C] square images.

  Returns:
    rotated [4B, H, H, C] and labels [4B]: rows 4i .. 4i+3 are image i turned counter-clockwise
    by 0, 90, 180 and 270 degrees, labelled 0, 1, 2, 3.
  """
  if images.shape[1] != images.shape[2]:
    raise ValueError(f"Rotation prediction needs square images, got {images.shape[1]}x{images.shape[2]}; set each view's size.")
  rotated = jnp.stack([jnp.rot90(images, k, axes=(1, 2)) for k in range(NUM_ROTATIONS)], axis=1)
  labels = jnp.tile(jnp.arange(NUM_ROTATIONS, dtype=jnp.int32), images.shape[0])
  return rotated.reshape(-1, *images.shape[1:]), labels


# ----------------------------------------------------------------------------------------------
# Jigsaw puzzles (Noroozi & Favaro 2016; DeepPermNet, Santa Cruz et al. 2017).
# ----------------------------------------------------------------------------------------------


def hamming_permutation_set(size: int, num_tiles: int = 9, selection: str = "max_min", seed: int = 0) -> np.ndarray:
  """`size` permutations of `num_tiles` tiles, far apart in Hamming distance: int32[size, num_tiles].

  Algorithm 1 of Noroozi & Favaro: the first permutation is random; each next one is, of all the
  permutations not chosen yet, the one with the largest minimum ('max_min') or mean ('max_avg')
  Hamming distance to those chosen (ties go to the first in lexicographic order). Far-apart
  permutations make the puzzles distinguishable from each other. Deterministic for a seed.
  """
  if selection not in ("max_min", "max_avg"):
    raise ValueError(f"selection must be 'max_min' or 'max_avg', got {selection!r}.")
  candidates = np.array(list(itertools.permutations(range(num_tiles))), np.int8)
  if not 1 <= size <= len(candidates):
    raise ValueError(f"A permutation set of {num_tiles} tiles holds 1 to {len(candidates)} permutations, not {size}.")
  chosen = [int(np.random.default_rng(seed).integers(len(candidates)))]
  score = np.zeros(len(candidates), np.int64)  # min or sum of distances to the chosen set
  reduce = np.minimum if selection == "max_min" else np.add
  for i in range(1, size):
    distance = (candidates != candidates[chosen[-1]]).sum(1)
    score = distance if i == 1 and selection == "max_min" else reduce(score, distance)
    score[chosen[-1]] = -1  # never chosen twice (its distance to itself is 0 anyway)
    chosen.append(int(np.argmax(score)))
  return candidates[chosen].astype(np.int32)


def puzzle_tiles(rng: jax.Array, images: jax.Array, tile_size: int, grid: int = 3, shared_offset: bool = False) -> jax.Array:
  """A grid x grid puzzle of each image: tiles [B, grid^2, tile, tile, C] in row-major order.

  Each cell of the grid is H // grid pixels; its tile is `tile_size` pixels at a random offset
  inside the cell, drawn per image and per tile, so neighbouring tiles are separated by a random
  gap and their edges do not line up (the paper's counter-measures against solving the puzzle
  from edge continuity). `shared_offset`: one offset for all tiles of an image (Mundhenk et al.'s
  "yoked" jitter: the gaps stay equal, only the grid moves).
  """
  batch, height, width, channels = images.shape
  cell = min(height, width) // grid
  if not 0 < tile_size <= cell:
    raise ValueError(f"Jigsaw tiles of {tile_size} px do not fit cells of {cell} px ({height}x{width} images, {grid}x{grid} grid); lower the tile size or raise the image size.")
  slack = cell - tile_size
  offsets = jax.random.randint(rng, (batch, 1 if shared_offset else grid * grid, 2), 0, slack + 1)
  corners = jnp.stack(jnp.meshgrid(jnp.arange(grid), jnp.arange(grid), indexing="ij"), -1).reshape(-1, 2) * cell
  starts = jnp.broadcast_to(corners[None] + offsets, (batch, grid * grid, 2))  # [B, tiles, 2]: (row, column) of each tile's top-left pixel

  def cut(image, start):
    return jax.lax.dynamic_slice(image, (start[0], start[1], 0), (tile_size, tile_size, channels))

  return jax.vmap(jax.vmap(cut, in_axes=(None, 0)))(images, starts)


def normalize_each_tile(tiles: jax.Array, min_std: float = 0.1) -> jax.Array:
  """Zero mean and unit std per tile and channel (the PyTorch port's per-tile normalisation),
  so that no tile's overall colour or brightness tells where it came from.

  The std is floored at `min_std` (inputs are normalised images, std about 1): a flat tile (sky,
  a plain background) stays flat instead of having its rounding noise blown up to unit std.
  """
  mean = tiles.mean(axis=(-3, -2), keepdims=True)
  std = tiles.std(axis=(-3, -2), keepdims=True)
  return (tiles - mean) / jnp.maximum(std, min_std)


def shuffle_tiles(tiles: jax.Array, permutations: jax.Array) -> jax.Array:
  """Puts tile `permutations[b, j]` of image b at position j: [B, T, ...] -> [B, T, ...]."""
  return jnp.take_along_axis(tiles, permutations.reshape(permutations.shape + (1,) * (tiles.ndim - 2)), axis=1)


def permutation_matrices(permutations: jax.Array) -> jax.Array:
  """One-hot [B, T, T] with M[b, j, permutations[b, j]] = 1: position j shows tile permutations[b, j]."""
  return jax.nn.one_hot(permutations, permutations.shape[-1], dtype=jnp.float32)


def sinkhorn_normalize(matrices: jax.Array, iterations: int, epsilon: float = 1e-3) -> jax.Array:
  """Alternately normalises rows and then columns to sum to 1, `iterations` times (DeepPermNet's
  Sinkhorn layer; the official code runs one iteration with epsilon = 0.001 added to each entry).
  Positive [..., T, T] -> approximately doubly stochastic."""
  matrices = matrices + epsilon
  for _ in range(iterations):
    matrices = matrices / matrices.sum(axis=-1, keepdims=True)
    matrices = matrices / matrices.sum(axis=-2, keepdims=True)
  return matrices


# ----------------------------------------------------------------------------------------------
# Relative position (Doersch, Gupta, Efros 2015) and the counter-measures of Mundhenk et al. 2018.
# ----------------------------------------------------------------------------------------------

CENTRE = 4  # the middle tile of a 3 x 3 grid
NEIGHBOURS = (0, 1, 2, 3, 5, 6, 7, 8)  # the 8 positions around it, labelled 0..7 in this order
# Green-magenta, the colour axis along which chromatic aberration separates (Doersch et al. 4.2).
_GREEN_MAGENTA = np.array([-1.0, 2.0, -1.0], np.float32) / np.sqrt(6.0)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def centre_neighbour_pairs(tiles: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The centre tile paired with each of its 8 neighbours (mmselfsup's relative-location pairs).

  tiles [B, 9, ...] -> centres [B, ...], neighbours [B, 8, ...], labels [B, 8] (0..7).
  """
  labels = jnp.broadcast_to(jnp.arange(len(NEIGHBOURS), dtype=jnp.int32), (tiles.shape[0], len(NEIGHBOURS)))
  return tiles[:, CENTRE], tiles[:, jnp.array(NEIGHBOURS)], labels


def drop_colour(rng: jax.Array, patches: jax.Array) -> jax.Array:
  """Keeps one random channel per patch (mean-subtracted) and replaces the other two with
  uniform noise in [-0.5, 0.5] (the official code's colour dropping). patches [N, h, w, 3] in [0, 1]."""
  keep_rng, noise_rng = jax.random.split(rng)
  keep = jax.nn.one_hot(jax.random.randint(keep_rng, (patches.shape[0],), 0, 3), 3, dtype=patches.dtype)[:, None, None, :]
  noise = jax.random.uniform(noise_rng, patches.shape, patches.dtype, -0.5, 0.5)
  kept = patches - patches.mean(axis=(1, 2), keepdims=True)
  return keep * kept + (1 - keep) * noise


def project_out_green_magenta(patches: jax.Array) -> jax.Array:
  """Removes each pixel's green-magenta component (Doersch et al.'s colour projection)."""
  axis = jnp.asarray(_GREEN_MAGENTA, patches.dtype)
  return patches - (patches @ axis)[..., None] * axis


def blur_chroma(patches: jax.Array, sigma: float) -> jax.Array:
  """Blurs the colour but not the brightness of each patch (Mundhenk et al.'s chroma blurring):
  the image is split into luma and the two colour differences from it, which alone are blurred."""
  from jaxssl.transforms import augment  # pylint: disable=g-import-not-at-top

  luma = (patches @ jnp.asarray(_LUMA, patches.dtype))[..., None]
  chroma = patches - luma
  size = max(3, 2 * int(np.ceil(2 * sigma)) + 1)
  return luma + augment.blur(chroma, sigma, size)


def random_aperture(rng: jax.Array, patches: jax.Array, probability: float, min_fraction: float = 0.5) -> jax.Array:
  """With `probability`, keeps only a random square window of each patch (side `min_fraction` to
  1 of the patch) and sets the rest to 0, the mean of a normalised patch (Mundhenk et al.'s
  random aperture: no patch is always seen whole, so its border cannot be relied on)."""
  n, height, width = patches.shape[:3]
  use_rng, side_rng, corner_rng = jax.random.split(rng, 3)
  side = jnp.round(jax.random.uniform(side_rng, (n,), minval=min_fraction, maxval=1.0) * height)
  corner = jax.random.uniform(corner_rng, (n, 2)) * (jnp.array([height, width]) - side[:, None])
  rows, cols = jnp.arange(height)[None, :, None], jnp.arange(width)[None, None, :]
  inside = ((rows >= corner[:, :1, None]) & (rows < corner[:, :1, None] + side[:, None, None])
            & (cols >= corner[:, 1:, None]) & (cols < corner[:, 1:, None] + side[:, None, None]))
  use = jax.random.uniform(use_rng, (n,)) < probability
  mask = jnp.where(use[:, None, None], inside, True)
  return patches * mask[..., None].astype(patches.dtype)


def rotate_each(images: jax.Array, turns: jax.Array) -> jax.Array:
  """Turns image i counter-clockwise by 90 x turns[i] degrees: [B, H, H, C], [B] -> [B, H, H, C]."""
  rotated = jnp.stack([jnp.rot90(images, k, axes=(1, 2)) for k in range(NUM_ROTATIONS)], axis=1)
  return jnp.take_along_axis(rotated, turns.reshape(-1, 1, 1, 1, 1), axis=1)[:, 0]


# ----------------------------------------------------------------------------------------------
# Inpainting masks (context encoders, Pathak et al. 2016): [B, H, W, 1] floats, 1 in the hole.
# ----------------------------------------------------------------------------------------------

MASKS = ("central", "random_block", "random_region")


def central_mask(batch_size: int, size: int, overlap: int = 0) -> jax.Array:
  """The centre square of side size/2, shrunk by `overlap` px on each side: the official code's
  hole, whose prediction also covers an `overlap`-px border of context."""
  start, stop = size // 4 + overlap, size // 4 + size // 2 - overlap
  line = (jnp.arange(size) >= start) & (jnp.arange(size) < stop)
  square = (line[:, None] & line[None, :]).astype(jnp.float32)
  return jnp.broadcast_to(square[None, :, :, None], (batch_size, size, size, 1))


def random_block_mask(rng: jax.Array, batch_size: int, size: int, num_blocks: int, block_size: int) -> jax.Array:
  """`num_blocks` squares of side `block_size` per image at uniform positions, possibly
  overlapping (the paper's random blocks: up to a quarter of the image for 4 blocks of size/4)."""
  corners = jax.random.randint(rng, (batch_size, num_blocks, 2), 0, size - block_size + 1)
  position = jnp.arange(size)
  inside = (position >= corners[..., None]) & (position < corners[..., None] + block_size)  # [B, K, 2, size]
  blocks = inside[:, :, 0, :, None] & inside[:, :, 1, None, :]  # [B, K, size, size]
  return jnp.any(blocks, axis=1)[..., None].astype(jnp.float32)


def random_region_mask(rng: jax.Array, batch_size: int, size: int, fraction: float, noise_cells: int) -> jax.Array:
  """Smooth random shapes covering exactly `fraction` of each image.

  The official code thresholds bicubic-upsampled uniform noise at 0.25 and keeps crops with 20-30%
  masked; thresholding each image's upsampled noise at its own `fraction` quantile gives the same
  shapes with the area fixed, and no rejection loop.
  """
  noise = jax.random.uniform(rng, (batch_size, noise_cells, noise_cells))
  smooth = jax.image.resize(noise, (batch_size, size, size), method="cubic")
  threshold = jnp.quantile(smooth.reshape(batch_size, -1), fraction, axis=-1)
  return (smooth <= threshold[:, None, None])[..., None].astype(jnp.float32)


def near_hole(mask: jax.Array, distance: int) -> jax.Array:
  """1 on the context pixels within `distance` px (Chebyshev) of the hole, else 0."""
  if distance <= 0:
    return jnp.zeros_like(mask)
  window = (1, 2 * distance + 1, 2 * distance + 1, 1)
  dilated = jax.lax.reduce_window(mask, jnp.zeros((), mask.dtype), jax.lax.max, window, (1, 1, 1, 1), "SAME")
  return dilated * (1.0 - mask)
