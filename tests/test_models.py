"""ResNet stems: how much each one downsamples before the first stage; zero-initialised residuals."""

import jax.numpy as jnp
import pytest
from flax import nnx

from jaxssl.models import resnet


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
