"""Convolutions on tiny maps as one matrix product: the same values and gradients as lax's."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jaxssl import models
from jaxssl.models import fast_paths

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize(
    "size, kernel, stride, padding",
    [(2, 3, 1, 1), (4, 3, 2, 1), (1, 3, 1, 1), (3, 3, 2, 1), (2, 1, 1, 0), (4, 5, 2, 2)],
)
def test_dense_conv_equals_the_convolution_and_its_gradients(size, kernel, stride, padding):
  keys = jax.random.split(jax.random.key(0), 2)
  inputs = jax.random.normal(keys[0], (3, size, size, 4))
  weights = jax.random.normal(keys[1], (kernel, kernel, 4, 5))
  pads = ((padding, padding), (padding, padding))

  def reference(x, w):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=_DIMENSIONS)

  def dense(x, w):
    return fast_paths.dense_conv(x, w, (stride, stride), pads)

  np.testing.assert_allclose(dense(inputs, weights), reference(inputs, weights), rtol=1e-5, atol=1e-5)
  probe = jax.random.normal(jax.random.key(2), reference(inputs, weights).shape)
  gradients = [jax.grad(lambda x, w, f=f: jnp.sum(probe * f(x, w)), argnums=(0, 1))(inputs, weights) for f in (reference, dense)]
  for ours, theirs in zip(gradients[1], gradients[0]):
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_tap_selection_by_hand():
  """A 3x3 kernel, padding 1, on a 2 x 2 map: every output sees every input, through the tap at
  (input - output + 1); a strided 1 x 1 output sees the inputs at taps (1..2, 1..2)."""
  selection = fast_paths.tap_selection((2, 2), (3, 3), (1, 1), ((1, 1), (1, 1)))
  assert selection.shape == (4, 4, 9)
  np.testing.assert_array_equal(selection.sum(-1), np.ones((4, 4)))
  # Output (0, 0) reads input (1, 1) through tap (2, 2); output (1, 1) reads input (0, 0) through tap (0, 0).
  assert selection[0, 3, 8] == 1 and selection[3, 0, 0] == 1
  strided = fast_paths.tap_selection((2, 2), (3, 3), (2, 2), ((1, 1), (1, 1)))
  assert strided.shape == (1, 4, 9)
  assert [int(np.argmax(strided[0, q])) for q in range(4)] == [4, 5, 7, 8]


def test_conv_takes_the_dense_form_only_on_tiny_outputs_and_keeps_the_result():
  conv = fast_paths.Conv(4, 6, kernel_size=(3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)], rngs=nnx.Rngs(0))
  plain = nnx.Conv(4, 6, kernel_size=(3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)], rngs=nnx.Rngs(0))
  tiny, large = jnp.ones((2, 4, 4, 4)), jnp.ones((2, 8, 8, 4))
  assert conv._dense_applies(tiny) and not conv._dense_applies(large)  # 2 x 2 and 4 x 4 outputs
  pointwise = fast_paths.Conv(4, 6, kernel_size=(1, 1), padding=[(0, 0), (0, 0)], rngs=nnx.Rngs(0))
  assert not pointwise._dense_applies(jnp.ones((2, 2, 2, 4)))
  inputs = jax.random.normal(jax.random.key(1), tiny.shape)
  np.testing.assert_allclose(conv(inputs), plain(inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stem", ["half", "imagenet"])
def test_resnet_with_fast_cpu_paths_is_the_same_network(stem):
  """At 16 px the last stages run on 2 x 2 and 1 x 1 maps (and the ImageNet stem max-pools): the
  flag changes how they are computed, not the parameters or the features."""
  def backbone(dense: bool):
    config = ml_collections.ConfigDict(dict(backbone="resnet18", width_multiplier=0.0625, stem=stem, dtype="float32", fast_cpu_paths=dense))
    return models.make_backbone(config, nnx.Rngs(0))

  plain, dense = backbone(False), backbone(True)
  assert any(isinstance(module, fast_paths.Conv) for _, module in nnx.iter_graph(dense))
  assert not any(isinstance(module, fast_paths.Conv) for _, module in nnx.iter_graph(plain))
  plain_params, dense_params = nnx.state(plain, nnx.Param), nnx.state(dense, nnx.Param)
  assert jax.tree.structure(plain_params) == jax.tree.structure(dense_params)
  images = jax.random.normal(jax.random.key(3), (4, 16, 16, 3))
  np.testing.assert_allclose(dense(images), plain(images), rtol=1e-4, atol=1e-5)


def test_max_pool_equals_nnx_max_pool_and_routes_the_gradient_to_the_maximum():
  inputs = jax.random.normal(jax.random.key(4), (2, 9, 8, 3))
  expected = nnx.max_pool(inputs, window_shape=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
  np.testing.assert_array_equal(fast_paths.max_pool(inputs, window=3, stride=2, padding=1), expected)
  probe = jax.random.normal(jax.random.key(5), expected.shape)
  ours = jax.grad(lambda x: jnp.sum(probe * fast_paths.max_pool(x, window=3, stride=2, padding=1)))(inputs)
  theirs = jax.grad(lambda x: jnp.sum(probe * nnx.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))))(inputs)
  np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)  # random inputs: no tied maxima
  # By hand: a 2 x 2 map, one window covering it all, padding 1: the maximum, everywhere.
  tiny = jnp.asarray([[1.0, 5.0], [3.0, 2.0]])[None, :, :, None]
  np.testing.assert_array_equal(fast_paths.max_pool(tiny, window=3, stride=2, padding=1)[0, :, :, 0], [[5.0]])
