"""Tests for host-side views and the grain training / eval pipelines."""

import json

import ml_collections
import numpy as np
import pytest

from jaxssl.data import pipeline, sources, views
from jaxssl.data.base import DataError

# Views.


def _coordinate_image(height, width):
  """R = column, G = row, so a crop's extent can be read off its pixels."""
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing='ij')
  return np.stack([cols, rows, np.zeros_like(rows)], -1).astype(np.uint8)


def test_random_resized_crop_shape_and_area():
  image = _coordinate_image(200, 240)
  size, scale = 32, (0.25, 0.5)
  rng = np.random.default_rng(0)
  for _ in range(20):
    out = views.random_resized_crop(image, rng, size, scale=scale)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    # Output pixel centres sample the crop at (i + 0.5) / size, so the
    # coordinate range seen is crop_extent * (1 - 1 / size).
    width = (int(out[..., 0].max()) - int(out[..., 0].min())) / (1 - 1 / size)
    height = (int(out[..., 1].max()) - int(out[..., 1].min())) / (1 - 1 / size)
    fraction = width * height / (200 * 240)
    assert scale[0] - 0.03 <= fraction <= scale[1] + 0.03, fraction


def test_crop_box_respects_scale_and_ratio():
  rng = np.random.default_rng(1)
  for _ in range(200):
    top, left, h, w = views.crop_box(50, 70, rng, (0.08, 1.0), (3 / 4, 4 / 3))
    assert 0 <= top and top + h <= 50 and 0 <= left and left + w <= 70
    assert 0.08 * 3500 * 0.8 <= h * w <= 3500


def test_crop_falls_back_to_centre_crop():
  # No crop with >= 90% of the area has an aspect ratio in [3/4, 4/3].
  image = _coordinate_image(20, 200)
  top, left, h, w = views.crop_box(
      20, 200, np.random.default_rng(0), scale=(0.9, 1.0)
  )
  assert (top, h) == (0, 20) and w == round(20 * 4 / 3)
  assert left == (200 - w) // 2
  out = views.random_resized_crop(
      image, np.random.default_rng(0), 16, scale=(0.9, 1.0)
  )
  assert out.shape == (16, 16, 3)
  assert abs(out[..., 0].mean() - 99.5) < 1.5  # Centred horizontally.


def test_center_resize():
  image = _coordinate_image(40, 60)
  out = views.center_resize(image, 20)
  assert out.shape == (20, 20, 3)
  # Centred (up to uint8 rounding).
  assert abs(out[..., 0].mean() - 29.5) <= 0.5
  assert abs(out[..., 1].mean() - 19.5) <= 0.5
  same = _coordinate_image(20, 20)
  np.testing.assert_array_equal(views.center_resize(same, 20), same)


def test_multi_view_transform_and_flip():
  image = _coordinate_image(48, 48)
  record = {'image': image, 'label': np.int32(4)}
  spec = {'size': 24, 'scale': (0.3, 1.0)}
  no_flip = views.MultiViewTransform([{**spec, 'flip_prob': 0.0}, 16])
  flip = views.MultiViewTransform([{**spec, 'flip_prob': 1.0}, 16])
  a = no_flip.random_map(record, np.random.default_rng(7))
  b = flip.random_map(record, np.random.default_rng(7))
  assert set(a) == {'view0', 'view1', 'label'} and a['label'] == 4
  assert a['view0'].shape == (24, 24, 3) and a['view1'].shape == (16, 16, 3)
  # Same random crop, mirrored.
  np.testing.assert_array_equal(b['view0'], a['view0'][:, ::-1])
  assert np.all(np.diff(a['view0'][..., 0].astype(int), axis=1) >= 0)
  assert np.all(np.diff(b['view0'][..., 0].astype(int), axis=1) <= 0)


def test_view_spec_from_config_dict():
  spec = views.ViewSpec.create(
      ml_collections.ConfigDict(dict(size=8, scale=[0.2, 1.0], flip_prob=0.0))
  )
  assert spec == views.ViewSpec(size=8, scale=(0.2, 1.0), flip_prob=0.0)
  with pytest.raises(ValueError, match='Unknown view spec keys'):
    views.ViewSpec.create({'size': 8, 'crop_scale': (0.2, 1.0)})


# Training iterator.

_N = 96
_SPECS = ({'size': 8, 'scale': (0.3, 1.0)}, {'size': 6})


def _index_source(n=_N):
  """Labels are record indices, so batches show which records they hold."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, 12, 12, 3), dtype=np.uint8)
  return sources.ArraySource({'image': images, 'label': np.arange(n)})


def _iterator(source=None, **kwargs):
  args = dict(
      seed=0,
      per_process_batch_size=8,
      view_specs=_SPECS,
      process_index=0,
      process_count=1,
  )
  args.update(kwargs)
  return pipeline.make_train_iterator(source or _index_source(), **args)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _assert_batches_equal(xs, ys):
  assert len(xs) == len(ys)
  for x, y in zip(xs, ys):
    assert set(x) == set(y)
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def test_batch_shapes():
  batch = next(_iterator())
  assert set(batch) == {'view0', 'view1', 'label', 'index'}
  assert batch['view0'].shape == (8, 8, 8, 3)
  assert batch['view1'].shape == (8, 6, 6, 3)
  assert batch['view0'].dtype == batch['view1'].dtype == np.uint8
  assert batch['label'].shape == (8,) and batch['label'].dtype == np.int32


def test_epochs_are_reshuffled_permutations():
  batches = _take(_iterator(), 2 * _N // 8)
  labels = np.concatenate([b['label'] for b in batches])
  first, second = labels[:_N], labels[_N:]
  assert sorted(first) == sorted(second) == list(range(_N))
  assert not np.array_equal(first, second)
  assert not np.array_equal(first, np.arange(_N))


def test_index_is_the_record_position_in_every_epoch():
  """NPID's memory bank is addressed by `index`; it must stay the record's position after epoch 1."""
  batches = _take(_iterator(), 3 * _N // 8)
  for batch in batches:  # the source's labels are the record positions
    np.testing.assert_array_equal(batch['index'], batch['label'])


def test_processes_read_their_rows_of_the_single_process_global_batch():
  """2 processes x b rows give exactly the batches of 1 process x 2b rows (views included),
  across epoch boundaries, so a run does not depend on how many processes share it."""
  source = _index_source(_N + 5)  # 101 records: 4 global batches of 24 per epoch, 5 dropped
  steps = 3 * 4 + 2  # into the fourth epoch
  single = _take(_iterator(source, per_process_batch_size=24), steps)
  parts = []
  for index in range(2):
    it = _iterator(source, per_process_batch_size=12, process_index=index, process_count=2)
    parts.append(_take(it, steps))
    it.close()
  for step, whole in enumerate(single):
    for key in whole:
      np.testing.assert_array_equal(np.concatenate([parts[0][step][key], parts[1][step][key]]), whole[key])
  first_epoch = np.concatenate([b['label'] for b in single[:4]])
  assert len(set(first_epoch.tolist())) == 96  # each epoch sees distinct records
  assert not np.array_equal(single[0]['label'], single[4]['label'])  # reshuffled per epoch


def test_same_seed_same_batches():
  _assert_batches_equal(_take(_iterator(), 3), _take(_iterator(), 3))
  other = _take(_iterator(seed=1), 3)
  assert not np.array_equal(other[0]['label'], _take(_iterator(), 1)[0]['label'])


def test_resume_from_state_continues_exactly():
  uninterrupted = _take(_iterator(), 16)  # 12 batches per epoch.
  interrupted = _iterator()
  _take(interrupted, 9)
  state = json.loads(json.dumps(interrupted.get_state()))
  assert state['next_batch'] == 9
  interrupted.close()
  resumed = _iterator()
  resumed.set_state(state)
  _assert_batches_equal(_take(resumed, 7), uninterrupted[9:])
  assert resumed.get_state()['next_batch'] == 16


def test_worker_processes_give_the_same_batches():
  expected = _take(_iterator(), 5)
  it = _iterator(worker_count=1)  # Starts one worker process (slow-ish).
  try:
    it.set_state({**it.get_state(), 'next_batch': 2})
    _assert_batches_equal(_take(it, 3), expected[2:])
    assert it.get_state()['next_batch'] == 5
  finally:
    it.close()


def test_too_little_data_for_one_batch():
  with pytest.raises(DataError, match=r'only 12 records.*batch of 16'):
    _iterator(_index_source(12), process_count=2)


# Evaluation arrays.


def test_eval_arrays_builtin_are_returned_directly():
  source = sources.make_source(
      ml_collections.ConfigDict(dict(name='builtin:digits')), 'test'
  )
  arrays = pipeline.load_eval_arrays(source, 32)
  assert arrays['image'] is source.arrays['image']
  assert arrays['image'].shape == (360, 32, 32, 3)
  subset = pipeline.load_eval_arrays(source, 32, max_examples=50)
  assert subset['image'].shape == (50, 32, 32, 3)
  assert len(set(subset['label'].tolist())) == 10  # Spread over the source.


def test_eval_arrays_are_centre_resized(tmp_path):
  source = _index_source(10)
  arrays = pipeline.load_eval_arrays(source, 6, max_examples=4)
  assert arrays['image'].shape == (4, 6, 6, 3)
  assert arrays['image'].dtype == np.uint8
  np.testing.assert_array_equal(arrays['label'], [0, 3, 6, 9])


def test_batches_carry_the_global_dataset_index():
  source = _index_source(_N + 3)  # labels are the record indices
  for index in range(3):
    it = _iterator(source, process_index=index, process_count=3)
    for batch in _take(it, 2):
      assert batch['index'].dtype == np.int32
      np.testing.assert_array_equal(batch['index'], batch['label'])
    it.close()
