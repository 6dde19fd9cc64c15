"""SimCLR and MoCo v3: ViT pieces, the frozen patch projection, the momentum schedule, and one
train step on 1 vs 8 simulated devices (global-batch negatives must not depend on the sharding)."""

import os
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jaxssl import methods, models, optim, parallel, train
from jaxssl.transforms import augment
from jaxssl.models import functional, vit
from tests import helpers  # also puts the repository root on sys.path for `configs`

from configs import moco_v3 as moco_v3_config  # noqa: E402
from configs import simclr as simclr_config  # noqa: E402

_IDENTITY = augment.AugmentSpec(
    brightness=0, contrast=0, saturation=0, hue=0, jitter_prob=0, grayscale_prob=0, blur_prob=0, solarize_prob=0
)


def _tiny(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
  """16 px images, batch 16, 8-d projections: one compile per function stays short."""
  return helpers.tiny_config(config, **{"model.projector_hidden_dim": 16, "model.projection_dim": 8, **overrides})

def _tiny_simclr():
  return _tiny(simclr_config.get_config())


def _tiny_moco_v3():
  """A 1-block ViT of width 16 (frozen patch projection), the paper's 3-layer projector and AdamW."""
  return _tiny(
      moco_v3_config.get_config(),
      **{
          "model.backbone": "vit_tiny",
          "model.vit.width": 16,
          "model.vit.depth": 1,
          "model.vit.num_heads": 2,
          "model.vit.patch_size": 4,
          "model.projector_num_layers": 3,
          "model.predictor_hidden_dim": 16,
          "model.predictor_output_batch_norm": True,
          "optimizer.name": "adamw",
          "optimizer.base_learning_rate": 1e-2,
          "optimizer.weight_decay": 0.1,
          "optimizer.exclude_bias_and_norm": False,
      },
  )


def _setup(config):
  method = methods.make_method(config, num_classes=10)
  tx = optim.make_optimizer(config)
  state = train.create_train_state(method, tx, jax.random.key(0))
  rng = np.random.default_rng(0)
  size = config.data.image_size
  batch = {
      "view0": rng.integers(0, 256, (config.batch_size, size, size, 3), dtype=np.uint8),
      "view1": rng.integers(0, 256, (config.batch_size, size, size, 3), dtype=np.uint8),
      "label": np.arange(config.batch_size) % 10,
  }
  return config, method, tx, state, batch


@pytest.fixture(scope="module")
def simclr_setup():
  return _setup(_tiny_simclr())


@pytest.fixture(scope="module")
def moco_v3_setup():
  return _setup(_tiny_moco_v3())


# ----------------------------------------------------------------------------------------------
# ViT.
# ----------------------------------------------------------------------------------------------


def _vit_model_config(**vit_options):
  options = dict(width=16, depth=2, num_heads=2, patch_size=4, image_size=16, position_embedding="sincos")
  options.update(vit_options)
  return ml_collections.ConfigDict(dict(backbone="vit_tiny", dtype="float32", vit=options))


def _vit_forward(model_config, images):
  """(features, params, batch stats before, batch stats after) of a fresh ViT, built and run in
  one jitted function (op-by-op construction compiles every initialiser separately)."""

  def run(images):
    pure, params, stats = functional.split_module(models.make_backbone(model_config, nnx.Rngs(0)))
    features, new_stats = pure(params, stats, images, train=True)
    return features, params, stats, new_stats

  return jax.jit(run)(images)


@pytest.mark.parametrize("position_embedding", ["sincos", "learned"])
def test_vit_output_shape_and_num_features(position_embedding):
  model_config = _vit_model_config(position_embedding=position_embedding)
  assert nnx.eval_shape(lambda: models.make_backbone(model_config, nnx.Rngs(0))).num_features == 16
  features, params, stats, new_stats = _vit_forward(model_config, jnp.ones((3, 16, 16, 3)))
  assert stats == {} and new_stats == {}  # no BatchNorm in a ViT
  assert ("position" in params) == (position_embedding == "learned")
  assert params["patch_embedding"]["kernel"].shape == (4 * 4 * 3, 16)
  assert features.shape == (3, 16)
  assert np.isfinite(features).all()


def test_vit_variants_have_the_papers_sizes():
  sizes = {name: models.vit_config(ml_collections.ConfigDict(dict(backbone=name, dtype="float32"))) for name in vit.VARIANTS}
  assert [(s.width, s.depth, s.num_heads) for s in sizes.values()] == [(192, 12, 3), (384, 12, 6), (768, 12, 12)]


def test_patchify_cuts_raster_ordered_patches():
  images = np.random.default_rng(0).normal(size=(2, 8, 12, 3)).astype(np.float32)
  patches = np.asarray(vit.patchify(jnp.asarray(images), 4))
  assert patches.shape == (2, 6, 48)
  for row in range(2):
    for col in range(3):
      np.testing.assert_array_equal(patches[:, row * 3 + col], images[:, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4].reshape(2, -1))


def test_sincos_position_embedding_matches_formula():
  width, height, grid_width = 8, 2, 3
  embedding = vit.sincos_position_embedding(height, grid_width, width)
  assert embedding.shape == (6, 8)
  for index in range(6):
    y, x = divmod(index, grid_width)
    omega = [1.0, 10000.0 ** -0.5]  # 10000^(-d / 2) for d = 0, 1
    expected = [np.sin(x * omega[0]), np.sin(x * omega[1]), np.cos(x * omega[0]), np.cos(x * omega[1]),
                np.sin(y * omega[0]), np.sin(y * omega[1]), np.cos(y * omega[0]), np.cos(y * omega[1])]
    np.testing.assert_allclose(embedding[index], expected, rtol=1e-6, atol=1e-7)


def test_vit_rejects_patch_size_not_dividing_image():
  with pytest.raises(ValueError, match="patch_size"):
    jax.eval_shape(lambda x: _vit_forward(_vit_model_config(patch_size=5), x), jnp.ones((1, 16, 16, 3)))


def test_frozen_patch_projection_gets_no_update_from_the_optimizer():
  """With AdamW and weight decay, only the frozen patch projection's update is exactly zero."""
  def updates(freeze):
    config = _tiny_moco_v3().unlock()
    config.model.vit.freeze_patch_embedding = freeze
    tx = optim.make_optimizer(config)
    params = {"backbone": {"patch_embedding": {"kernel": jnp.ones((4, 2))}, "norm": {"scale": jnp.ones(2)}}}
    grads = jax.tree.map(jnp.ones_like, params)
    return tx.update(grads, tx.init(params), params)[0]["backbone"]

  frozen, trained = updates(True), updates(False)
  assert np.all(np.asarray(frozen["patch_embedding"]["kernel"]) == 0)
  assert np.all(np.asarray(frozen["norm"]["scale"]) != 0)
  assert np.all(np.asarray(trained["patch_embedding"]["kernel"]) != 0)  # the mask is what zeroes it


# ----------------------------------------------------------------------------------------------
# MoCo v3: momentum encoder.
# ----------------------------------------------------------------------------------------------


def test_momentum_schedule_is_half_cosine_to_one(moco_v3_setup):
  config, method, _, _, _ = moco_v3_setup
  base, total = config.moco_v3.base_momentum, config.total_steps
  for step in range(total + 1):
    expected = 1 - 0.5 * (1 + np.cos(np.pi * step / total)) * (1 - base)  # official adjust_moco_momentum
    np.testing.assert_allclose(float(method.momentum(step)), expected, rtol=1e-6)
  assert float(method.momentum(0)) == pytest.approx(base) and float(method.momentum(total)) == pytest.approx(1.0)


def test_momentum_encoder_starts_as_copy_and_follows_ema(moco_v3_setup):
  _, method, _, state, _ = moco_v3_setup
  for part in ("backbone", "projector"):
    jax.tree.map(np.testing.assert_array_equal, state.extra["momentum_params"][part], state.params[part])
  assert "predictor" not in state.extra["momentum_params"]
  moved = state.replace(step=jnp.asarray(2), params=jax.tree.map(lambda x: x + 1.0, state.params))
  aux = {"batch_stats": state.extra["batch_stats"], "momentum_batch_stats": state.extra["momentum_batch_stats"]}
  m = float(method.momentum(2))
  extra = method.after_update(moved, aux)
  jax.tree.map(
      lambda new, old: np.testing.assert_allclose(new, old + (1 - m), rtol=1e-5, atol=1e-6),
      extra["momentum_params"], state.extra["momentum_params"],
  )


# ----------------------------------------------------------------------------------------------
# One step on 1 vs 8 devices.
# ----------------------------------------------------------------------------------------------


def _loss_and_grads(method, state, batch, mesh):
  replicated, sharded = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  fn = jax.jit(
      lambda params, extra, batch, rng: jax.value_and_grad(method.loss, has_aux=True)(params, extra, batch, rng, 0),
      in_shardings=(replicated, replicated, sharded, replicated),
  )
  (loss, aux), grads = fn(state.params, state.extra, batch, jax.random.key(7))
  return jax.device_get((loss, aux["batch_stats"], grads))


def _one_step(method, tx, config, state, batch, mesh):
  step = train.jit_train_step(train.make_train_step(method, tx, optim.learning_rate_schedule(config)), mesh)
  state = jax.device_put(jax.tree.map(np.asarray, state), parallel.replicated(mesh))  # the step donates it
  new_state, metrics = step(state, jax.device_put(batch, parallel.batch_sharded(mesh)), jax.random.key(7))
  return jax.device_get((new_state, metrics))


def _assert_close(what, a, b, tolerance=1e-5):
  def close(path, x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    scale = max(1.0, float(np.abs(x).max()))
    assert np.abs(x - y).max() <= tolerance * scale, (what, path, np.abs(x - y).max(), scale)

  jax.tree_util.tree_map_with_path(close, a, b)


def _one_vs_eight_devices_float64(setup):
  """Loss, gradients, BN statistics and the new state agree to 1e-5 in float64 (on-device
  augmentation, which is float32 and tested separately, is the identity here)."""
  config, method, tx, state, batch = setup
  assert jax.device_count() == 8
  saved_specs = method.view_specs
  method.view_specs = (_IDENTITY, _IDENTITY)
  jax.config.update("jax_enable_x64", True)
  try:
    state = jax.tree.map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, state)
    one, eight = parallel.make_mesh(jax.devices()[:1]), parallel.make_mesh()
    loss1, stats1, grads1 = _loss_and_grads(method, state, batch, one)
    loss8, stats8, grads8 = _loss_and_grads(method, state, batch, eight)
    _assert_close("loss", loss1, loss8)
    _assert_close("gradients", grads1, grads8)
    _assert_close("batch statistics", stats1, stats8)
    state1, metrics1 = _one_step(method, tx, config, state, batch, one)
    state8, metrics8 = _one_step(method, tx, config, state, batch, eight)
    _assert_close("new params", state1.params, state8.params)
    _assert_close("new extra", state1.extra, state8.extra)
    _assert_close("step loss", metrics1["loss"], metrics8["loss"])
  finally:
    jax.config.update("jax_enable_x64", False)
    method.view_specs = saved_specs
  return grads1, state1, jax.device_get(state)


def test_simclr_one_step_same_on_1_and_8_devices(simclr_setup):
  grads, new_state, old_state = _one_vs_eight_devices_float64(simclr_setup)
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), new_state.params, old_state.params)
  assert min(jax.tree.leaves(moved["backbone"])) > 0  # every backbone parameter was trained


def test_moco_v3_one_step_same_on_1_and_8_devices_and_patch_projection_frozen(moco_v3_setup):
  grads, new_state, old_state = _one_vs_eight_devices_float64(moco_v3_setup)
  patch = "patch_embedding"
  # The model stops the patch projection's gradient and the optimizer masks its update, so it
  # keeps its random initialisation, online and in the momentum encoder ...
  assert all(np.all(g == 0) for g in jax.tree.leaves(grads["backbone"][patch]))
  for tree_new, tree_old in ((new_state.params, old_state.params), (new_state.extra["momentum_params"], old_state.extra["momentum_params"])):
    jax.tree.map(np.testing.assert_array_equal, tree_new["backbone"][patch], tree_old["backbone"][patch])
  # ... while every other parameter of the backbone moved.
  moved = {k: v for k, v in new_state.params["backbone"].items() if k != patch}
  before = {k: v for k, v in old_state.params["backbone"].items() if k != patch}
  changes = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), moved, before)
  assert min(jax.tree.leaves(changes)) > 0


def test_vit_class_attention_maps_are_the_last_blocks_attention_to_patches(tmp_path):
  from jaxssl.evaluation import plots

  model_config = _vit_model_config()
  encoder = models.make_backbone(model_config, nnx.Rngs(0))
  images = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))
  maps = np.asarray(encoder.class_attention(images))
  heads = encoder.blocks[-1].attention.num_heads
  assert maps.shape == (2, heads, 4, 4)  # 16 px in 4 px patches
  # A softmax row over the class token and the 16 patches: the patches take what the class token leaves.
  last = encoder.blocks[-1]
  x = encoder._tokens(images)  # pylint: disable=protected-access
  for block in encoder.blocks[:-1]:
    x = block(x)
  full = np.asarray(last.attention.weights(last.attention_norm(x)))
  np.testing.assert_allclose(maps.reshape(2, heads, -1).sum(-1) + full[:, :, 0, 0], 1.0, rtol=1e-5)
  path = plots.plot_class_attention(str(tmp_path / "attention.png"), np.asarray(images), maps)
  assert os.path.getsize(path) > 1000


def _bytes_per_device(shardings, abstract) -> int:
  leaves = zip(jax.tree.leaves(shardings), jax.tree.leaves(abstract))
  return sum(int(np.prod(sharding.shard_shape(leaf.shape))) * leaf.dtype.itemsize for sharding, leaf in leaves)


def test_fsdp_splits_vit_state_over_devices_and_steps_as_replicated(moco_v3_setup):
  """FSDP: parameters, optimizer state and the momentum encoder take 1/devices of the memory on
  each device, and the step computes what the replicated step does, keeping the state split."""
  config, method, tx, state, batch = moco_v3_setup
  abstract = jax.eval_shape(lambda: state)
  split_parts = lambda s: (s.params, s.opt_state, s.extra["momentum_params"])
  whole = _bytes_per_device(split_parts(train.state_shardings(method, parallel.make_mesh(jax.devices()[:1]), abstract)), split_parts(abstract))
  for devices in (2, 4, 8):
    shardings = train.state_shardings(method, parallel.make_mesh(jax.devices()[:devices]), abstract, fsdp=True)
    # Only scalars (Adam's step count) stay whole: within 1% of an exact 1/devices.
    assert _bytes_per_device(split_parts(shardings), split_parts(abstract)) <= 1.01 * whole / devices

  mesh = parallel.make_mesh()
  fsdp = train.state_shardings(method, mesh, abstract, fsdp=True)
  step = train.jit_train_step(train.make_train_step(method, tx, optim.learning_rate_schedule(config)), mesh, fsdp)
  split_state = jax.device_put(jax.tree.map(np.asarray, state), fsdp)
  new_state, metrics = step(split_state, jax.device_put(batch, parallel.batch_sharded(mesh)), jax.random.key(7))
  assert all(leaf.sharding.is_equivalent_to(s, leaf.ndim) for leaf, s in zip(jax.tree.leaves(new_state), jax.tree.leaves(fsdp)))
  replicated_state, replicated_metrics = _one_step(method, tx, config, state, batch, mesh)
  _assert_close("loss", replicated_metrics["loss"], jax.device_get(metrics["loss"]), tolerance=1e-5)
  _assert_close("new state", replicated_state, jax.device_get(new_state), tolerance=1e-5)
