"""RotNet: the four rotations and their labels, the loss by hand, one step on 1 vs 8 devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import losses, methods, optim, train
from jaxssl.methods import common
from jaxssl.transforms import pretext
from tests import helpers
from tests.test_moco import _batch, compare_one_step_float64

from configs import rotnet as rotnet_config  # noqa: E402


def test_four_rotations_turn_each_image_counter_clockwise_in_place():
  images = jnp.arange(2 * 3 * 3 * 1, dtype=jnp.float32).reshape(2, 3, 3, 1)
  rotated, labels = pretext.four_rotations(images)
  assert rotated.shape == (8, 3, 3, 1)
  np.testing.assert_array_equal(labels, [0, 1, 2, 3, 0, 1, 2, 3])
  first = np.asarray(images[0, ..., 0])  # [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
  np.testing.assert_array_equal(rotated[0, ..., 0], first)
  # 90 degrees counter-clockwise: the right column becomes the top row.
  np.testing.assert_array_equal(rotated[1, ..., 0], [[2, 5, 8], [1, 4, 7], [0, 3, 6]])
  np.testing.assert_array_equal(rotated[2, ..., 0], first[::-1, ::-1])
  np.testing.assert_array_equal(rotated[3, ..., 0], [[6, 3, 0], [7, 4, 1], [8, 5, 2]])
  np.testing.assert_array_equal(rotated[4, ..., 0], np.asarray(images[1, ..., 0]))
  with pytest.raises(ValueError, match="square"):
    pretext.four_rotations(jnp.zeros((1, 4, 5, 3)))


@pytest.fixture(scope="module")
def setup():
  config = helpers.tiny_config(rotnet_config.get_config("quick"))
  method = methods.make_method(config, num_classes=10)
  tx = optim.make_optimizer(config)
  state = train.create_train_state(method, tx, jax.random.key(0))
  return config, method, tx, state, _batch(config)


def test_loss_is_the_cross_entropy_of_the_rotation_head(setup):
  """The rotation loss by hand: the head's logits on the backbone's features of each rotation."""
  config, method, _, state, batch = setup
  params, extra = state.params, state.extra
  _, aux = method.loss(params, extra, batch, jax.random.key(1), 0)
  (images,) = [np.asarray(v) for v in common.view_images(jax.random.key(1), (batch["view0"],), method.view_specs[:1])]
  turned = np.concatenate([np.rot90(images, k, axes=(1, 2))[:, None] for k in range(4)], axis=1).reshape(-1, *images.shape[1:])
  features, _ = method.backbone(params["backbone"], extra["batch_stats"]["backbone"], jnp.asarray(turned), train=True)
  head = params["rotation_head"]
  logits = np.asarray(features) @ np.asarray(head["kernel"]) + np.asarray(head["bias"])
  log_probs = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
  expected = -np.mean(log_probs[np.arange(len(logits)), np.tile(np.arange(4), len(images))])
  np.testing.assert_allclose(aux["metrics"]["rotation_loss"], expected, rtol=1e-5)
  assert aux["metrics"]["rotation_loss"] == pytest.approx(float(losses.softmax_cross_entropy(jnp.asarray(logits), jnp.tile(jnp.arange(4), len(images)))), rel=1e-5)


def test_one_step_same_on_1_and_8_devices_float64(setup):
  config, method, tx, state, batch = setup
  loss, _, new_state = compare_one_step_float64(method, tx, config, state, {k: batch[k] for k in ("view0", "label")})
  assert np.isfinite(loss)
  assert int(new_state.step) == 1


def test_presets_follow_the_paper():
  cifar = rotnet_config.get_config("cifar10")
  assert cifar.optimizer.nesterov and cifar.optimizer.momentum == 0.9 and cifar.optimizer.weight_decay == 5e-4
  assert cifar.optimizer.base_learning_rate * cifar.batch_size / 256 == pytest.approx(0.1)  # 0.1 at batch 128
  quick = rotnet_config.get_config("quick")
  assert quick.data.name == "builtin:scenes" and len(quick.augment.views) == 1
  with pytest.raises(ValueError, match="configs/rotnet.py"):
    rotnet_config.get_config("nope")
