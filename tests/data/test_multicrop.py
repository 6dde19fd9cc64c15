"""Multi-crop views: shapes, scale ranges, determinism and resumption of the host pipeline, and
the per-resolution regrouping the methods use."""

import json

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxssl.data import pipeline, sources, views
from jaxssl.methods import multicrop

_GLOBAL = {'size': 12, 'scale': (0.4, 1.0)}
_LOCAL = views.ViewSpec(size=6, scale=(0.05, 0.14))


def _coordinate_image(size):
  """R = column, G = row, so a crop's extent can be read off its pixels."""
  rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing='ij')
  return np.stack([cols, rows, np.zeros_like(rows)], -1).astype(np.uint8)


def _area_fraction(view, image_size):
  size = view.shape[0]
  width = (int(view[..., 0].max()) - int(view[..., 0].min())) / (1 - 1 / size)
  height = (int(view[..., 1].max()) - int(view[..., 1].min())) / (1 - 1 / size)
  return width * height / image_size**2


def test_local_and_global_crops_have_their_own_size_and_scale_range():
  transform = views.MultiViewTransform(
      [{'size': 32, 'scale': (0.4, 1.0), 'flip_prob': 0.0}] * 2,
      views.ViewSpec(size=16, scale=(0.05, 0.14), flip_prob=0.0),
      num_local_views=6,
  )
  image, rng = _coordinate_image(240), np.random.default_rng(0)
  global_fractions, local_fractions = [], []
  for _ in range(10):
    out = transform.random_map({'image': image, 'label': 3}, rng)
    assert out['view0'].shape == out['view1'].shape == (32, 32, 3)
    assert out['local_views'].shape == (6, 16, 16, 3)
    assert out['local_views'].dtype == np.uint8
    global_fractions += [_area_fraction(out[k], 240) for k in ('view0', 'view1')]
    local_fractions += [_area_fraction(v, 240) for v in out['local_views']]
  # Pixel-grid rounding widens the ranges by a few per cent of the image.
  assert 0.4 - 0.03 <= min(global_fractions) and max(global_fractions) <= 1.0 + 0.03
  assert 0.05 - 0.01 <= min(local_fractions) and max(local_fractions) <= 0.14 + 0.01
  assert len({round(f, 3) for f in local_fractions}) > 30  # independent draws


def _source(n=48):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, 24, 24, 3), dtype=np.uint8)
  return sources.ArraySource({'image': images, 'label': np.arange(n)})


def _iterator(**kwargs):
  args = dict(
      seed=0, per_process_batch_size=8, view_specs=(_GLOBAL, _GLOBAL),
      local_view_spec=_LOCAL, num_local_views=3, process_index=0, process_count=1,
  )
  args.update(kwargs)
  return pipeline.make_train_iterator(_source(), **args)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_batches_are_one_array_per_resolution():
  batch = next(_iterator())
  assert set(batch) == {'view0', 'view1', 'local_views', 'label', 'index'}
  assert batch['view0'].shape == batch['view1'].shape == (8, 12, 12, 3)
  assert batch['local_views'].shape == (8, 3, 6, 6, 3)
  assert batch['local_views'].dtype == np.uint8


def test_deterministic_and_resumable():
  uninterrupted = _take(_iterator(), 9)  # 6 batches per epoch
  again = _take(_iterator(), 9)
  interrupted = _iterator()
  _take(interrupted, 4)
  state = json.loads(json.dumps(interrupted.get_state()))
  assert state['num_local_views'] == 3
  resumed = _iterator()
  resumed.set_state(state)
  for expected, a, b in zip(uninterrupted[4:], again[4:], _take(resumed, 5)):
    for key in expected:
      np.testing.assert_array_equal(a[key], expected[key])
      np.testing.assert_array_equal(b[key], expected[key])
  assert not np.array_equal(uninterrupted[0]['local_views'][:, 0], uninterrupted[0]['local_views'][:, 1])


def test_local_view_settings_from_config():
  augment = ml_collections.ConfigDict({'views': [], 'local_views': {'num': 6, 'size': 96, 'crop_scale': (0.05, 0.14), 'flip_prob': 0.5}})
  settings = views.local_view_settings(augment)
  assert settings == {'local_view_spec': views.ViewSpec(96, (0.05, 0.14), flip_prob=0.5), 'num_local_views': 6}
  augment.local_views.num = 0
  assert views.local_view_settings(augment) == {}
  assert views.local_view_settings(ml_collections.ConfigDict({'views': []})) == {}


def test_local_views_need_a_spec():
  with pytest.raises(ValueError, match='local_view_spec'):
    views.MultiViewTransform([_GLOBAL], None, num_local_views=2)


def test_per_crop_regroups_global_and_local_outputs():
  batch, num_global, num_local = 3, 2, 4
  # Global rows are crop-major (crop, example); local rows example-major (example, crop).
  global_ids = [(c, b) for c in range(num_global) for b in range(batch)]
  local_ids = [(num_global + c, b) for b in range(batch) for c in range(num_local)]
  outputs = jnp.asarray([[c, b] for c, b in global_ids + local_ids], jnp.float32)
  grouped = np.asarray(multicrop.per_crop(outputs, batch, num_global))
  assert grouped.shape == (num_global + num_local, batch, 2)
  for c in range(num_global + num_local):
    np.testing.assert_array_equal(grouped[c], [[c, b] for b in range(batch)])
