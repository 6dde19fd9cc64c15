"""Context encoders: the masks' areas, the losses by hand, the two players moving in opposite
directions on the adversarial term, one step on 1 vs 8 devices, the ImageNet preset traced."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import context_encoder as context_encoder_config
from jaxssl import methods, optim, parallel, train
from jaxssl.errors import UserError
from jaxssl.methods import context_encoder
from jaxssl.methods.common import view_images
from jaxssl.transforms import augment, pretext
from tests import helpers

IDENTITY = augment.AugmentSpec(brightness=0, contrast=0, saturation=0, hue=0, jitter_prob=0, grayscale_prob=0, blur_prob=0, solarize_prob=0)

# --- masks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size,overlap", [(16, 0), (16, 1), (32, 4)])
def test_central_mask_is_the_centre_square_less_the_overlap(size, overlap):
  mask = np.asarray(pretext.central_mask(2, size, overlap))[0, :, :, 0]
  side = size // 2 - 2 * overlap
  assert mask.sum() == side**2
  rows, cols = np.nonzero(mask)
  assert rows.min() == cols.min() == size // 4 + overlap and rows.max() == cols.max() == size // 4 + overlap + side - 1


def test_random_blocks_cover_at_most_their_squares_and_differ_per_image():
  mask = np.asarray(pretext.random_block_mask(jax.random.key(0), 64, 16, 4, 4))[..., 0]
  area = mask.sum(axis=(1, 2))
  assert area.max() <= 4 * 16 and area.min() >= 16  # 4 blocks of 4 x 4, possibly overlapping
  assert len({m.tobytes() for m in mask}) == 64
  single = np.asarray(pretext.random_block_mask(jax.random.key(1), 8, 16, 1, 5))[..., 0]
  for m in single:  # one block: a 5 x 5 square inside the image
    rows, cols = np.nonzero(m)
    assert m.sum() == 25 and rows.max() - rows.min() == 4 and cols.max() - cols.min() == 4


def test_random_regions_cover_the_configured_fraction_of_every_image():
  mask = np.asarray(pretext.random_region_mask(jax.random.key(0), 16, 32, 0.25, 4))[..., 0]
  np.testing.assert_allclose(mask.mean(axis=(1, 2)), 0.25, atol=1 / 32**2)
  assert len({m.tobytes() for m in mask}) == 16


def test_near_hole_marks_the_border_ring():
  mask = pretext.central_mask(1, 16, 0)  # the 8 x 8 centre
  ring = np.asarray(pretext.near_hole(mask, 2))[0, :, :, 0]
  assert ring.sum() == 12**2 - 8**2 and ring[4:12, 4:12].sum() == 0 and ring[2, 2] == 1 and ring[1, 1] == 0


# --- losses by hand ------------------------------------------------------------------------------


def test_reconstruction_loss_weights_the_hole_and_its_border():
  rng = np.random.default_rng(0)
  predicted, target = rng.normal(size=(2, 6, 6, 3)), rng.normal(size=(2, 6, 6, 3))
  mask = np.zeros((2, 6, 6, 1))
  mask[:, 2:4, 2:4] = 1
  weights = mask.copy()
  weights[:, 1:5, 1:5] += 10.0 * (1 - mask[:, 1:5, 1:5])  # the 1-px ring around the hole, weight 10
  expected = np.sum(weights * np.mean((predicted - target) ** 2, axis=-1, keepdims=True)) / weights.sum()
  loss = context_encoder.reconstruction_loss(jnp.asarray(predicted), jnp.asarray(target), jnp.asarray(mask), 1, 10.0)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  no_border = context_encoder.reconstruction_loss(jnp.asarray(predicted), jnp.asarray(target), jnp.asarray(mask), 0, 10.0)
  np.testing.assert_allclose(no_border, np.mean((predicted - target)[:, 2:4, 2:4] ** 2), rtol=1e-5)


def test_real_fake_losses_by_hand():
  real, fake = np.array([2.0, -1.0]), np.array([0.5, -3.0])
  bce = lambda logits, label: np.mean(np.log1p(np.exp(-logits)) if label else np.log1p(np.exp(logits)))
  discriminator, inpainter = context_encoder.real_fake_losses(jnp.asarray(real), jnp.asarray(fake))
  np.testing.assert_allclose(discriminator, bce(real, 1) + bce(fake, 0), rtol=1e-6)
  np.testing.assert_allclose(inpainter, bce(fake, 1), rtol=1e-6)


# --- the train step ------------------------------------------------------------------------------


def tiny_config(**overrides):
  return helpers.tiny_config(
      context_encoder_config.get_config(),
      **{"context_encoder.discriminator_width": 4, "context_encoder.decoder_min_width": 4, **overrides},
  )


@pytest.fixture(scope="module")
def setup():
  config = tiny_config()
  method = methods.make_method(config, num_classes=10)
  rng = np.random.default_rng(0)
  batch = {"view0": rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8), "label": np.arange(16, dtype=np.int32) % 10}
  tx = optim.with_players(optim.make_optimizer(config), method.players)
  state = jax.jit(lambda rng: train.create_train_state(method, tx, rng))(jax.random.key(0))
  return config, method, tx, state, batch


def _grads(method, params, extra, batch):
  return train.players_value_and_grad(method.loss, method.players, params, extra, batch, jax.random.key(3), 0)


def test_the_discriminator_gets_exactly_its_own_loss_gradient(setup):
  _, method, _, state, batch = setup
  cfg = method.config.context_encoder

  def players_and_direct(params):
    metrics = lambda p: method.loss(p, state.extra, batch, jax.random.key(3), 0)[1]["metrics"]
    direct = jax.grad(lambda p: metrics(p)["discriminator_loss"])(params)
    main = jax.grad(lambda p: cfg.reconstruction_weight * metrics(p)["reconstruction_loss"] + cfg.adversarial_weight * metrics(p)["adversarial_loss"])(params)
    return _grads(method, params, state.extra, batch), direct, main

  ((_, aux), grads), direct, main = jax.jit(players_and_direct)(state.params)  # one compilation
  helpers.assert_trees_close(grads[context_encoder.DISCRIMINATOR], direct[context_encoder.DISCRIMINATOR], 1e-5)
  helpers.assert_trees_close(grads["decoder"], main["decoder"], 1e-5)
  assert 0.2 < float(aux["metrics"]["hole_fraction"]) < 0.3


def test_one_step_moves_the_players_in_opposite_directions_on_the_adversarial_term():
  """With the adversarial term alone, one step lowers it through the inpainter and raises it
  through the discriminator."""
  config = tiny_config(**{"context_encoder.reconstruction_weight": 0.0, "context_encoder.adversarial_weight": 1.0})
  method = methods.make_method(config)
  tx = optim.with_players(optim.make_optimizer(config), method.players)
  state = jax.jit(lambda rng: train.create_train_state(method, tx, rng))(jax.random.key(0))
  batch = {"view0": np.random.default_rng(1).integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)}
  new_state, _ = jax.jit(train.make_train_step(method, tx, optim.learning_rate_schedule(config)))(state, batch, jax.random.key(5))
  step_rng = jax.random.fold_in(jax.random.key(5), 0)  # the train step's key for step 0
  adversarial = jax.jit(lambda params: method.loss(params, state.extra, batch, step_rng, 0)[1]["metrics"]["adversarial_loss"])
  before = float(adversarial(state.params))
  discriminator_moved = dict(state.params, discriminator=new_state.params["discriminator"])
  inpainter_moved = dict(new_state.params, discriminator=state.params["discriminator"])
  assert float(adversarial(discriminator_moved)) > before
  assert float(adversarial(inpainter_moved)) < before



def test_running_batch_norm_averages_come_from_the_whole_images(setup):
  """Evaluation embeds whole images, so the backbone's running averages are those of a pass over
  the unmasked views, not of the masked inputs the inpainter sees (the switch restores those)."""
  _, method, _, state, batch = setup
  rng = jax.random.key(3)

  @jax.jit
  def new_stats_and_views(params, extra):
    view_rng, _ = jax.random.split(rng)
    (images,) = view_images(view_rng, (batch["view0"],), method.view_specs[:1])
    new_stats = method.loss(params, extra, batch, rng, 0)[1]["batch_stats"]["backbone"]
    return new_stats, method.whole_image_statistics(params, extra, images)

  new_stats, whole = new_stats_and_views(state.params, state.extra)
  helpers.assert_trees_close(new_stats, whole, 1e-6)
  masked_method = methods.make_method(tiny_config(**{"context_encoder.statistics_from_whole_images": False}), num_classes=10)
  masked = jax.jit(lambda p, e: masked_method.loss(p, e, batch, rng, 0)[1]["batch_stats"]["backbone"])(state.params, state.extra)
  differences = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), masked, whole))
  assert max(differences) > 1e-3


def test_one_step_same_on_1_and_8_devices_float64(setup):
  config, method, tx, state, batch = setup
  assert jax.device_count() == 8
  saved = method.view_specs
  method.view_specs = (IDENTITY,)  # colour augmentation always computes in float32
  jax.config.update("jax_enable_x64", True)
  try:
    state64 = jax.tree.map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, state)
    results = []
    for mesh in (parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh()):
      replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
      step = train.jit_train_step(train.make_train_step(method, tx, optim.learning_rate_schedule(config)), mesh)
      placed = jax.device_put(jax.tree.map(np.asarray, state64), replicated)
      results.append(jax.device_get(step(placed, jax.device_put(batch, sharded), jax.random.key(7))))
    (state1, metrics1), (state8, metrics8) = results
    # Both players' losses, and the parameters each player's own update gave.
    helpers.assert_trees_close({k: metrics1[k] for k in ("loss", "discriminator_loss")}, {k: metrics8[k] for k in ("loss", "discriminator_loss")}, 1e-5)
    helpers.assert_trees_close(state1.params, state8.params, 1e-5)
    helpers.assert_trees_close(state1.extra, state8.extra, 1e-5)
    for name in ("backbone", "bottleneck", "decoder", "discriminator"):  # both players learn
      moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), state1.params[name], jax.device_get(state64.params[name]))
      assert max(jax.tree.leaves(moved)) > 0, name
  finally:
    jax.config.update("jax_enable_x64", False)
    method.view_specs = saved


def test_sample_grid_shows_the_hole_and_its_fill(setup):
  _, method, _, state, batch = setup
  columns = jax.jit(method.sample_grid)(state.params, state.extra, batch["view0"][:4])
  assert list(columns) == list(method.sample_columns) or set(columns) == set(method.sample_columns)
  original = np.asarray(columns["original"])
  masked, inpainted = np.asarray(columns["masked input"]), np.asarray(columns["inpainted"])
  hole = np.asarray(method.masks(jax.random.key(0), 4))[..., 0] > 0
  mean = np.asarray(augment.IMAGENET_MEAN)
  np.testing.assert_allclose(masked[hole], np.broadcast_to(mean, masked[hole].shape), atol=1e-5)  # filled with the mean
  np.testing.assert_allclose(inpainted[~hole], original[~hole], atol=1e-5)  # the context is kept
  assert not np.allclose(inpainted[hole], masked[hole])  # the hole is painted


def test_config_mistakes_name_the_fix():
  with pytest.raises(UserError, match="config.context_encoder.mask"):
    methods.make_method(tiny_config(**{"context_encoder.mask": "square"}))
  with pytest.raises(UserError, match="power-of-two"):
    methods.make_method(tiny_config(**{"data.image_size": 20, "augment.views": [context_encoder_config._view(20)]}))
  with pytest.raises(ValueError, match="Unknown preset"):
    context_encoder_config.get_config("quick,centre")


def test_imagenet_preset_traces_one_step():
  config = context_encoder_config.get_config("imagenet")
  method = methods.make_method(config, num_classes=1000)
  tx = optim.with_players(optim.make_optimizer(config), method.players)
  state = jax.eval_shape(lambda rng: train.create_train_state(method, tx, rng), jax.random.key(0))
  assert state.params["bottleneck"]["kernel"].shape == (2048, 16, 16)  # 4 x 4 cells at 128 px
  batch = {"view0": jax.ShapeDtypeStruct((config.batch_size, 128, 128, 3), jnp.uint8), "label": jax.ShapeDtypeStruct((config.batch_size,), jnp.int32)}
  new_state, metrics = jax.eval_shape(train.make_train_step(method, tx, optim.learning_rate_schedule(config)), state, batch, jax.random.key(0))
  assert new_state.params["decoder"]["output"]["kernel"].shape == (3, 3, 64, 3) and "discriminator_loss" in metrics
