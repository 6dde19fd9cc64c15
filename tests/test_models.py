"""ResNet stems: how much each one downsamples before the first stage; zero-initialised residuals;
BatchNorm over interleaved views."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxssl.errors import UserError
from jaxssl.models import functional, normalization, resnet


@pytest.mark.parametrize("stem, expected_size", [("imagenet", 4), ("half", 8), ("small", 16)])
def test_stem_downsampling(stem, expected_size):
  model = resnet.ResNet(resnet.ResNetConfig(depth=18, width_multiplier=0.0625, stem=stem), rngs=nnx.Rngs(0))
  images = jnp.zeros((2, 16, 16, 3))
  assert model.stem(images).shape == (2, expected_size, expected_size, 4)
  assert model(images).shape == (2, model.num_features)


def test_unknown_stem_names_the_choices():
  with pytest.raises(ValueError, match="'imagenet', 'half', 'small'"):
    resnet.ResNet(resnet.ResNetConfig(depth=18, stem="tiny"), rngs=nnx.Rngs(0))


@pytest.mark.parametrize("block", [resnet.BasicBlock, resnet.BottleneckBlock])
def test_zero_init_residual_starts_every_block_as_the_identity(block):
  # Same input and output shape, so the shortcut is the identity: the block returns relu(x).
  x = jnp.linspace(-1.0, 1.0, 2 * 4 * 4 * 8).reshape(2, 4, 4, 8)
  width = 8 // block.expansion
  zeroed = block(8, width, 1, jnp.float32, nnx.Rngs(0), zero_init_residual=True)
  assert jnp.allclose(zeroed(x), nnx.relu(x))
  default = block(8, width, 1, jnp.float32, nnx.Rngs(0))
  assert not jnp.allclose(default(x), nnx.relu(x))


# ----------------------------------------------------------------------------------------------
# BatchNorm over interleaved views (models.normalization).
# ----------------------------------------------------------------------------------------------


def _tiny_resnet():
  config = resnet.ResNetConfig(depth=18, width_multiplier=1 / 16, stem="half")
  return functional.split_module(resnet.ResNet(config, rngs=nnx.Rngs(0)))


def test_one_pass_over_interleaved_views_equals_one_pass_per_view():
  """Outputs and running averages of one interleaved pass with `views=2` are those of two
  passes in turn, the second starting from the statistics the first left."""

  module, params, stats = _tiny_resnet()
  view0, view1 = jax.random.normal(jax.random.key(1), (2, 6, 16, 16, 3)) * jnp.array([1.0, 3.0])[:, None, None, None, None]
  out0, stats0 = module(params, stats, view0, train=True)
  out1, stats1 = module(params, stats0, view1, train=True)
  both, stats_both = module(params, stats, normalization.interleave([view0, view1]), train=True, views=2)
  np.testing.assert_allclose(both, normalization.interleave([out0, out1]), rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), stats_both, stats1)
  # Statistics over the two views together differ (view1 has 3x the scale): the test can fail.
  joint, _ = module(params, stats, normalization.interleave([view0, view1]), train=True)
  assert not np.allclose(joint, both, atol=1e-3)
  # In eval mode the running averages are used, so the views do not matter.
  evaluated, _ = module(params, stats1, normalization.interleave([view0, view1]), train=False, views=2)
  np.testing.assert_allclose(evaluated, module(params, stats1, normalization.interleave([view0, view1]), train=False)[0])


def test_interleave_puts_each_examples_views_side_by_side_and_deinterleave_undoes_it():

  a, b = jnp.arange(3.0), 10 + jnp.arange(3.0)
  assert normalization.interleave([a, b]).tolist() == [0, 10, 1, 11, 2, 12]
  back = normalization.deinterleave(normalization.interleave([a, b]), 2)
  assert [x.tolist() for x in back] == [a.tolist(), b.tolist()]


def test_views_refuses_a_module_with_a_plain_batch_norm():

  module, params, stats = functional.split_module(nnx.BatchNorm(4, rngs=nnx.Rngs(0)))
  with pytest.raises(UserError, match="plain nnx.BatchNorm"):
    module(params, stats, jnp.ones((4, 4)), train=True, views=2)
