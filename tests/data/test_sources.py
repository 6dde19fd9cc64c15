"""Tests for the grain data sources."""

import ml_collections
import numpy as np
from PIL import Image
import pytest

from jaxssl.data import sources
from jaxssl.data.base import DataError


def _data_config(**overrides):
  config = ml_collections.ConfigDict()
  config.name = 'builtin:digits'
  config.data_dir = ml_collections.FieldReference(None, field_type=str)
  config.image_key = 'image'
  config.label_key = 'label'
  config.image_size = 32
  config.update(overrides)
  return config


def _check_record(record, label_range=None):
  assert set(record) == {'image', 'label'}
  image, label = record['image'], record['label']
  assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3
  assert isinstance(label, np.int32)
  if label_range is not None:
    assert label_range[0] <= label < label_range[1]


# ArraySource and make_source.


def test_array_source():
  images = np.arange(5 * 4 * 4 * 3, dtype=np.uint8).reshape(5, 4, 4, 3)
  source = sources.ArraySource({'image': images, 'label': np.arange(5)})
  assert len(source) == 5 and source.has_labels and source.num_classes == 5
  record = source[3]
  _check_record(record, (3, 4))
  np.testing.assert_array_equal(record['image'], images[3])


def test_array_source_greyscale_and_unlabelled():
  source = sources.ArraySource({'image': np.zeros((3, 6, 6), np.uint8)})
  assert not source.has_labels
  record = source[0]
  _check_record(record)
  assert record['image'].shape == (6, 6, 3) and record['label'] == -1


def test_train_examples_keeps_evenly_spaced_records():
  images = np.arange(10 * 2 * 2 * 3, dtype=np.uint8).reshape(10, 2, 2, 3)
  source = sources.ArraySource({'image': images, 'label': np.arange(10) % 5})
  assert sources.restrict_to_train_examples(source, 0) is source
  subset = sources.restrict_to_train_examples(source, 4)
  # linspace(0, 9, 4) = 0, 3, 6, 9: every part of the split, renumbered 0..3.
  assert len(subset) == 4 and subset.has_labels and subset.num_classes == 5
  np.testing.assert_array_equal(subset[1]['image'], images[3])
  assert [int(subset[i]['label']) for i in range(4)] == [0, 3, 1, 4]
  np.testing.assert_array_equal(subset.arrays['image'], images[[0, 3, 6, 9]])
  with pytest.raises(DataError, match='train_examples=11 .* set it between 1 and 10'):
    sources.restrict_to_train_examples(source, 11)


def test_make_source_builtin():
  source = sources.make_source(_data_config(name='builtin:digits'), 'test')
  assert isinstance(source, sources.ArraySource)
  assert len(source) == 360 and source.has_labels
  _check_record(source[0], (0, 10))
  small = sources.make_source(
      _data_config(name='builtin:textured_digits', image_size=16), 'test'
  )
  assert small[5]['image'].shape == (16, 16, 3)


def test_make_source_errors():
  with pytest.raises(DataError, match='unknown prefix'):
    sources.make_source(_data_config(name='hub:cifar10'), 'train')
  with pytest.raises(DataError, match='builtin:textured_digits'):
    sources.make_source(_data_config(name='cifar10'), 'train')
  with pytest.raises(DataError, match='valid names'):
    sources.make_source(_data_config(name='builtin:nope'), 'train')


# TfdsSource. `tfds.testing.mock_data` replaces the builder's
# `as_data_source` with random examples that follow the real feature specs
# (USE_CODE: the specs come from the dataset's code, nothing is read or
# downloaded), so the real `tfds.data_source` -> TfdsSource path is exercised.


@pytest.fixture(name='tfds')
def _tfds():
  return pytest.importorskip('tensorflow_datasets')


def test_tfds_source_greyscale_mnist(tfds):
  with tfds.testing.mock_data(
      num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE
  ):
    source = sources.make_source(_data_config(name='tfds:mnist'), 'train')
    assert isinstance(source, sources.TfdsSource)
    assert len(source) == 6 and source.has_labels and source.num_classes == 10
    for i in range(len(source)):
      record = source[i]
      _check_record(record, (0, 10))
      assert record['image'].shape == (28, 28, 3)
      # Grey replicated to RGB.
      np.testing.assert_array_equal(record['image'][..., 0],
                                    record['image'][..., 2])


def test_tfds_source_cifar10_and_missing_label(tfds):
  with tfds.testing.mock_data(
      num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE
  ):
    source = sources.TfdsSource('cifar10', 'test')
    assert source.has_labels
    record = source[2]
    _check_record(record, (0, 10))
    assert record['image'].shape == (32, 32, 3)

    unlabelled = sources.TfdsSource('cifar10', 'test', label_key='no_label')
    assert not unlabelled.has_labels
    assert unlabelled[0]['label'] == -1

    with pytest.raises(DataError, match='config.data.image_key') as error:
      sources.TfdsSource('cifar10', 'test', image_key='picture')
    assert 'id, image, label' in str(error.value)


def test_tfds_source_dataset_not_prepared(tfds, tmp_path):
  del tfds
  data_dir = str(tmp_path / 'no_tfds_here')
  with pytest.raises(DataError, match='was not found in data_dir') as error:
    sources.make_source(
        _data_config(name='tfds:mnist', data_dir=data_dir), 'train'
    )
  message = str(error.value)
  assert data_dir in message
  assert 'tfds build mnist' in message and 'array_record' in message
  assert 'config.data.data_dir' in message


def test_tfds_source_unknown_dataset(tfds, tmp_path):
  del tfds
  with pytest.raises(DataError, match='no TFDS dataset named'):
    sources.TfdsSource('no_such_dataset_xyz', 'train', data_dir=str(tmp_path))


# ImageFolderSource.


def _write_image(path, size=(12, 10), mode='RGB', value=128):
  path.parent.mkdir(parents=True, exist_ok=True)
  channels = {'RGB': 3, 'RGBA': 4, 'L': None}[mode]
  shape = (size[1], size[0]) + ((channels,) if channels else ())
  Image.fromarray(np.full(shape, value, np.uint8), mode=mode).save(path)


def test_image_folder_with_classes(tmp_path):
  _write_image(tmp_path / 'cat' / 'a.png', (12, 10))
  _write_image(tmp_path / 'cat' / 'nested' / 'b.JPG', (20, 16))
  _write_image(tmp_path / 'dog' / 'c.png', (8, 8), mode='L', value=7)
  _write_image(tmp_path / 'dog' / 'd.png', (9, 9), mode='RGBA')
  (tmp_path / 'dog' / 'notes.txt').write_text('not an image')
  (tmp_path / 'empty').mkdir()
  source = sources.ImageFolderSource(str(tmp_path))
  assert source.has_labels
  assert source.class_names == ('cat', 'dog')
  assert len(source) == 4
  labels = [source[i]['label'] for i in range(4)]
  assert labels == [0, 0, 1, 1]
  shapes = [source[i]['image'].shape for i in range(4)]
  assert shapes == [(10, 12, 3), (16, 20, 3), (8, 8, 3), (9, 9, 3)]
  for i in range(4):
    _check_record(source[i])
  np.testing.assert_array_equal(source[2]['image'], 7)


def test_image_folder_flat_is_unlabelled(tmp_path):
  _write_image(tmp_path / 'x.jpeg')
  _write_image(tmp_path / 'y.webp')
  source = sources.ImageFolderSource(tmp_path)
  assert not source.has_labels and source.class_names == ()
  assert len(source) == 2
  assert [source[i]['label'] for i in range(2)] == [-1, -1]


def test_image_folder_split_subfolders(tmp_path):
  _write_image(tmp_path / 'train' / 'a' / '1.png')
  _write_image(tmp_path / 'train' / 'b' / '2.png')
  _write_image(tmp_path / 'test' / 'a' / '3.png')
  config = _data_config(name=f'folder:{tmp_path}')
  train = sources.make_source(config, 'train')
  test = sources.make_source(config, 'test')
  assert len(train) == 2 and train.class_names == ('a', 'b')
  assert len(test) == 1


def test_image_folder_errors(tmp_path):
  with pytest.raises(DataError, match='does not exist'):
    sources.ImageFolderSource(str(tmp_path / 'missing'))
  (tmp_path / 'a').mkdir()
  (tmp_path / 'a' / 'readme.txt').write_text('hi')
  with pytest.raises(DataError, match='contains no images'):
    sources.ImageFolderSource(str(tmp_path))
  (tmp_path / 'a' / 'broken.png').write_bytes(b'not a png')
  source = sources.ImageFolderSource(str(tmp_path))
  with pytest.raises(DataError, match='Could not decode image'):
    source[0]


def test_data_spec_parses_the_config_once_with_its_defaults():
  from jaxssl.data.base import DataSpec

  spec = DataSpec.from_config(_data_config())
  assert (spec.name, spec.kind, spec.image_size, spec.seed, spec.data_dir, spec.train_examples) == ('builtin:digits', 'image', 32, 0, None, 0)
  # Unset or None keys take the defaults; an explicit label_key=None means unlabelled data.
  spec = DataSpec.from_config({'name': 'tfds:x', 'image_key': None, 'label_key': None, 'fps': None})
  assert (spec.image_key, spec.label_key, spec.fps, spec.audio_sample_rate) == ('image', None, 25.0, None)
  assert DataSpec.from_config(spec) is spec
  with pytest.raises(DataError, match='config.data.name is not set'):
    DataSpec.from_config({'image_size': 8})
  # The parsed spec is what sources take: the same records as the config it came from.
  config = _data_config(image_size=16)
  np.testing.assert_array_equal(sources.make_source(DataSpec.from_config(config), 'test')[3]['image'], sources.make_source(config, 'test')[3]['image'])


def _split(tmp_path, split):
  return sources.make_source(_data_config(name=f'folder:{tmp_path}'), split)


def test_image_folder_without_a_test_folder_holds_out_every_tenth_image_per_class(tmp_path):
  for i in range(20):
    _write_image(tmp_path / 'a' / f'{i:02d}.png', value=i)
  for i in range(10):
    _write_image(tmp_path / 'b' / f'{i:02d}.png', value=100 + i)
  train, test = _split(tmp_path, 'train'), _split(tmp_path, 'test')
  held_out = {int(test[i]['image'][0, 0, 0]) for i in range(len(test))}
  trained = {int(train[i]['image'][0, 0, 0]) for i in range(len(train))}
  assert held_out == {9, 19, 109} and len(train) == 27
  assert not held_out & trained
  assert sorted(int(test[i]['label']) for i in range(len(test))) == [0, 0, 1]


def test_image_folder_with_train_but_no_test_folder_holds_out_from_train(tmp_path):
  for i in range(10):
    _write_image(tmp_path / 'train' / 'a' / f'{i}.png')
    _write_image(tmp_path / 'train' / 'b' / f'{i}.png')
  train, test = _split(tmp_path, 'train'), _split(tmp_path, 'test')
  assert train.class_names == test.class_names == ('a', 'b')  # not one class named "train"
  assert (len(train), len(test)) == (18, 2)


def test_image_folder_test_split_is_labelled_by_class_name(tmp_path):
  for name in ('a', 'b', 'c'):
    _write_image(tmp_path / 'train' / name / '1.png')
  _write_image(tmp_path / 'test' / 'b' / '1.png')
  _write_image(tmp_path / 'test' / 'c' / '1.png')
  test = _split(tmp_path, 'test')
  assert [int(test[i]['label']) for i in range(2)] == [1, 2]  # b and c, not 0 and 1
  _write_image(tmp_path / 'test' / 'zebra' / '1.png')
  with pytest.raises(DataError, match='zebra'):
    _split(tmp_path, 'test')


def test_image_folder_test_without_train_folder_is_an_error(tmp_path):
  _write_image(tmp_path / 'test' / 'a' / '1.png')
  with pytest.raises(DataError, match="no 'train' folder"):
    _split(tmp_path, 'train')


def test_decompression_bomb_names_the_file(tmp_path, monkeypatch):
  _write_image(tmp_path / 'a' / 'big.png', size=(64, 64))
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)  # 64 x 64 is then over twice the limit
  source = sources.ImageFolderSource(str(tmp_path))
  with pytest.raises(DataError, match='big.png.*too large'):
    source[0]


def test_tfds_record_names_read_file_name_without_images(tfds):
  with tfds.testing.mock_data(
      num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE
  ):
    imagenet = sources.TfdsSource('imagenet2012', 'train')
    names = sources.record_names(imagenet, [0, 3])
    assert len(names) == 2 and all(isinstance(n, str) and n for n in names)
    assert names == sources.record_names(imagenet, [0, 3])  # the same records, read again
    assert sources.record_names(sources.TfdsSource('cifar10', 'test'), [0]) is None  # no file_name
