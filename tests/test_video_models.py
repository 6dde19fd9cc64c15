"""Video backbones: the CPU form of the 3-D convolution, output shapes, and TSM's temporal shift."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxssl.models import video


@pytest.mark.parametrize(
    "kernel, strides",
    [((3, 3, 3), (1, 1, 1)), ((3, 3, 3), (2, 2, 2)), ((1, 3, 3), (1, 2, 2)), ((3, 1, 1), (2, 1, 1)), ((1, 1, 1), (2, 2, 2))],
)
def test_conv3d_matches_the_native_3d_convolution(kernel, strides):
  x = jax.random.normal(jax.random.key(0), (2, 5, 7, 6, 3))
  w = jax.random.normal(jax.random.key(1), (*kernel, 3, 4))
  padding = [(k // 2, k // 2) for k in kernel]
  expected = jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
  np.testing.assert_allclose(video.conv3d(x, w, strides), expected, rtol=1e-5, atol=1e-5)


def test_conv3d_rejects_even_kernels():
  with pytest.raises(ValueError, match="odd kernel sizes"):
    video.Conv3D(3, 4, (2, 3, 3), (1, 1, 1), None, nnx.Rngs(0))


@pytest.mark.parametrize(
    "name, width, expected_features",
    [("small3d", 0.25, 32), ("tsm_resnet18", 0.125, 64), ("r2plus1d_18", 0.125, 64)],
)
def test_backbones_pool_clips_to_feature_vectors(name, width, expected_features):
  config = video.VideoBackboneConfig(name=name, width_multiplier=width, stem="small")
  model = video.make_video_backbone(config, nnx.Rngs(0))
  features = model(jnp.ones((2, 4, 8, 8, 3)))
  assert model.num_features == expected_features
  assert features.shape == (2, expected_features)
  assert bool(jnp.all(jnp.isfinite(features)))


def test_temporal_shift_moves_one_eighth_of_channels_each_way():
  # 2 clips of 3 frames, 8 channels: channel 0 comes from the next frame, channel 1 from the
  # previous one (zeros at the clip's ends), the rest stay.
  frames = jnp.arange(2 * 3, dtype=jnp.float32).reshape(6, 1, 1, 1) * jnp.ones((6, 1, 1, 8))
  shifted = video.temporal_shift(frames, num_frames=3, fraction=0.125)[:, 0, 0]
  t = np.arange(6, dtype=np.float32)
  np.testing.assert_array_equal(shifted[:, 0], [1, 2, 0, 4, 5, 0])
  np.testing.assert_array_equal(shifted[:, 1], [0, 0, 1, 0, 3, 4])
  np.testing.assert_array_equal(shifted[:, 2:], np.repeat(t[:, None], 6, axis=1))
