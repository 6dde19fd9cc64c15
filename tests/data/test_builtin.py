"""Tests for the offline built-in datasets."""

import time

import numpy as np
import pytest

from jaxssl.data import builtin
from jaxssl.data import patterns
from jaxssl.data import scenes
from jaxssl.data.base import DataError

_DIGIT_SETS = ('digits', 'textured_digits')

_SIZES = {
    ('digits', 'train'): 1437,
    ('digits', 'test'): 360,
    ('textured_digits', 'train'): 1437 * 4,
    ('textured_digits', 'test'): 360 * 2,
}


@pytest.mark.parametrize('name,split', sorted(_SIZES))
def test_shapes_dtypes_and_labels(name, split):
  data = builtin.load_builtin(name, split)
  assert set(data) == {'image', 'label'}
  assert data['image'].shape == (_SIZES[name, split], 32, 32, 3)
  assert data['image'].dtype == np.uint8
  assert data['label'].shape == (_SIZES[name, split],)
  assert data['label'].dtype == np.int32
  np.testing.assert_array_equal(np.unique(data['label']), np.arange(10))
  assert not data['image'].flags.writeable  # Cached: must not be modified.
  # Labels match the base digits they were rendered from.
  digits_labels = builtin._all_digits()[1]
  np.testing.assert_array_equal(
      data['label'], digits_labels[builtin.base_indices(name, split)]
  )


def test_plain_digits_are_grey_white_on_black():
  images = builtin.load_builtin('digits', 'test')['image']
  np.testing.assert_array_equal(images[..., 0], images[..., 1])
  np.testing.assert_array_equal(images[..., 0], images[..., 2])
  assert images[:, 0, 0].max() == 0  # Black corners.
  assert images.max() == 255


def test_image_size():
  data = builtin.load_builtin('textured_digits', 'test', image_size=20)
  assert data['image'].shape == (720, 20, 20, 3)


def test_deterministic_and_seeded():
  cached = builtin.load_builtin('textured_digits', 'test', seed=0)
  fresh = builtin._load_cached.__wrapped__('textured_digits', 'test', 32, 0)
  np.testing.assert_array_equal(cached['image'], fresh['image'])
  np.testing.assert_array_equal(cached['label'], fresh['label'])
  other = builtin.load_builtin('textured_digits', 'test', seed=1)
  assert not np.array_equal(cached['image'], other['image'])
  np.testing.assert_array_equal(cached['label'], other['label'])


def test_copies_are_rendered_differently():
  data = builtin.load_builtin('textured_digits', 'test')
  first, second = data['image'][:360], data['image'][360:]
  np.testing.assert_array_equal(data['label'][:360], data['label'][360:])
  assert not np.any(np.all(first == second, axis=(1, 2, 3)))


@pytest.mark.parametrize('name', _DIGIT_SETS)
def test_train_and_test_base_digits_are_disjoint(name):
  train = set(builtin.base_indices(name, 'train').tolist())
  test = set(builtin.base_indices(name, 'test').tolist())
  assert not train & test
  assert train | test == set(range(1797))
  assert all(i % 5 == 0 for i in test)


def test_generation_is_fast():
  builtin._all_digits()  # Loading scikit-learn is not part of generation.
  start = time.process_time()
  builtin._load_cached.__wrapped__('textured_digits', 'train', 32, 123)
  builtin._load_cached.__wrapped__('textured_digits', 'test', 32, 123)
  elapsed = time.process_time() - start
  print(f'textured_digits train+test generated in {elapsed:.2f} s of CPU')
  assert elapsed < 2.0


def _one_nn_accuracy(name: str) -> float:
  train = builtin.load_builtin(name, 'train')
  test = builtin.load_builtin(name, 'test')
  x = train['image'].reshape(len(train['image']), -1).astype(np.float32) / 255
  q = test['image'].reshape(len(test['image']), -1).astype(np.float32) / 255
  distances = (q * q).sum(1)[:, None] - 2 * q @ x.T + (x * x).sum(1)[None]
  predicted = train['label'][np.argmin(distances, axis=1)]
  return float(np.mean(predicted == test['label']))


def test_textured_digits_are_hard_for_raw_pixels():
  plain = _one_nn_accuracy('digits')
  textured = _one_nn_accuracy('textured_digits')
  print(f'raw-pixel 1-NN accuracy: digits {plain:.3f}, '
        f'textured_digits {textured:.3f}')
  assert plain > 0.9
  assert textured < plain - 0.2
  assert textured < 0.5


@pytest.mark.parametrize('split', builtin.BUILTIN_SPLITS)
def test_patterns_shapes_and_balanced_labels(split):
  data = builtin.load_builtin('patterns', split)
  size = patterns.SPLIT_SIZES[split]
  assert data['image'].shape == (size, 32, 32, 3) and data['image'].dtype == np.uint8
  assert data['label'].dtype == np.int32
  counts = np.bincount(data['label'], minlength=len(patterns.CLASS_NAMES))
  np.testing.assert_array_equal(counts, size // len(patterns.CLASS_NAMES))
  assert not data['image'].flags.writeable


def test_patterns_are_deterministic_seeded_and_split_apart():
  cached = builtin.load_builtin('patterns', 'test', seed=0)
  fresh = builtin._load_cached.__wrapped__('patterns', 'test', 32, 0)
  np.testing.assert_array_equal(cached['image'], fresh['image'])
  assert not np.array_equal(cached['image'], builtin.load_builtin('patterns', 'test', seed=1)['image'])
  train = builtin.load_builtin('patterns', 'train')['image'][:1000]
  assert not np.array_equal(train, cached['image'])
  assert builtin.load_builtin('patterns', 'test', image_size=16)['image'].shape == (1000, 16, 16, 3)


def test_pattern_classes_differ_in_geometry_not_colour():
  """Per-class means of the images are alike (colour carries no class information), while the
  orientation of the intensity gradients separates the stripe classes."""
  data = builtin.load_builtin('patterns', 'train')
  images, labels = data['image'].astype(np.float32) / 255, data['label']
  class_colour = np.stack([images[labels == c].mean((0, 1, 2)) for c in range(10)])
  assert np.ptp(class_colour, axis=0).max() < 0.05
  grey = images.mean(-1)
  vertical = np.abs(np.diff(grey, axis=1)).mean((1, 2))  # changes from row to row
  horizontal = np.abs(np.diff(grey, axis=2)).mean((1, 2))
  ratio = vertical / horizontal
  assert np.median(ratio[labels == 0]) > 1.5  # horizontal stripes vary down the image
  assert np.median(ratio[labels == 1]) < 1 / 1.5  # vertical stripes across it


def test_patterns_are_hard_for_raw_pixels():
  accuracy = _one_nn_accuracy('patterns')
  print(f'raw-pixel 1-NN accuracy on patterns: {accuracy:.3f}')
  assert 0.1 < accuracy < 0.5


@pytest.mark.parametrize('split', builtin.BUILTIN_SPLITS)
def test_scenes_shapes_and_balanced_labels(split):
  data = builtin.load_builtin('scenes', split, image_size=16)
  size = scenes.SPLIT_SIZES[split]
  assert data['image'].shape == (size, 16, 16, 3) and data['image'].dtype == np.uint8
  counts = np.bincount(data['label'], minlength=len(scenes.CLASS_NAMES))
  np.testing.assert_array_equal(counts, size // len(scenes.CLASS_NAMES))
  assert not data['image'].flags.writeable


def test_scenes_are_deterministic_and_seeded():
  cached = builtin.load_builtin('scenes', 'test', image_size=16, seed=0)
  fresh = builtin._load_cached.__wrapped__('scenes', 'test', 16, 0)
  np.testing.assert_array_equal(cached['image'], fresh['image'])
  assert not np.array_equal(cached['image'], builtin.load_builtin('scenes', 'test', image_size=16, seed=1)['image'])


def test_scenes_have_an_upright_and_class_dependent_colours():
  """What rotation prediction and colorization learn from: outdoors, the sky (top rows) is bluer
  than the ground (bottom rows) in almost every image, so a rotated image can be told apart;
  studio backdrops are blended in a random direction; and, unlike `patterns`, the classes
  differ in colour (the lighthouse's red, the snowman's white)."""
  def bluer_above(images):
    top, bottom = images[:, :4].mean((1, 2)), images[:, -4:].mean((1, 2))
    return np.mean(top[:, 2] - top[:, 1] > bottom[:, 2] - bottom[:, 1])

  labels = np.arange(500) % 10
  outdoors = scenes.render_scenes(labels, 32, np.random.default_rng(0), studio_fraction=0.0) / 255
  studio = scenes.render_scenes(labels, 32, np.random.default_rng(0), studio_fraction=1.0) / 255
  assert bluer_above(outdoors) > 0.9 and 0.3 < bluer_above(studio) < 0.7
  data = builtin.load_builtin('scenes', 'test')
  images, labels = data['image'].astype(np.float32) / 255, data['label']
  # Object colours: the centre column's mean colour per class spreads far more than patterns'.
  centre = images[:, 8:28, 12:20].mean((1, 2))
  class_colour = np.stack([centre[labels == c].mean(0) for c in range(10)])
  assert np.ptp(class_colour, axis=0).max() > 0.1


def test_scenes_are_hard_for_raw_pixels():
  accuracy = _one_nn_accuracy('scenes')
  print(f'raw-pixel 1-NN accuracy on scenes: {accuracy:.3f}')
  assert 0.1 < accuracy < 0.5


def test_unknown_name_and_split():
  with pytest.raises(DataError, match='patterns, scenes, digits, textured_digits'):
    builtin.load_builtin('mnist', 'train')
  with pytest.raises(DataError, match='train, test'):
    builtin.load_builtin('digits', 'validation')
  with pytest.raises(DataError, match='image_size'):
    builtin.load_builtin('digits', 'train', image_size=4)
