"""SSL for robustness: the corruptions, AUROC by hand, the loss's two parts, one step on 1 vs 8
devices, and the robustness evaluation on a tiny trained state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import losses, methods, optim, parallel, train
from jaxssl.data.base import DataSpec
from jaxssl.evaluation import robustness
from jaxssl.methods.common import view_images
from tests import helpers
from tests.test_moco import _batch, compare_one_step_float64

from configs import ssl_robustness as robustness_config  # noqa: E402


def test_corruptions_grow_with_severity_and_stay_in_range():
  images = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3))
  for name in robustness.SEVERITIES:
    changes = []
    for severity in range(1, 6):
      out = robustness.corrupt(jax.random.key(1), images, name, severity)
      assert out.shape == images.shape and float(out.min()) >= 0 and float(out.max()) <= 1
      changes.append(float(jnp.abs(out - images).mean()))
    assert changes[0] > 0 and changes[-1] > changes[0], name
  with pytest.raises(ValueError, match="severities"):
    robustness.corrupt(jax.random.key(1), images, "contrast", 6)


def test_corruptions_against_their_definitions():
  images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
  # Pixelate by a half: box-filtering 16 -> 8 -> 16 px leaves each 2 x 2 block its mean.
  blocks = np.asarray(images).reshape(2, 8, 2, 8, 2, 3).mean(axis=(2, 4))
  np.testing.assert_allclose(robustness._pixelate(images, 0.5), np.repeat(np.repeat(blocks, 2, 1), 2, 2), atol=1e-6)
  # A box resize to a size that does not divide: rows are convex weights over the input.
  matrix = robustness.box_resize_matrix(16, 15)
  np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-6)
  assert (matrix >= 0).all()
  # Defocus: the kernel sums to 1; radius 1 spreads a point over the centre and its 4 neighbours.
  kernel = robustness.defocus_kernel(1.0, 0.2)
  np.testing.assert_allclose(kernel.sum(), 1.0, atol=1e-6)
  np.testing.assert_allclose([kernel[8, 8], kernel[8, 9], kernel[7, 8]], 0.2, atol=1e-3)
  assert kernel[9, 9] < 1e-3
  constant = jnp.full((1, 16, 16, 3), 0.4)
  np.testing.assert_allclose(robustness._filter(constant, kernel), constant, atol=1e-6)
  # A zoom of 1 is the identity; shot noise keeps the mean.
  np.testing.assert_allclose(robustness._zoom(images, 1.0), images, atol=1e-6)
  noisy = robustness.corrupt(jax.random.key(2), jnp.full((8, 16, 16, 3), 0.5), "shot_noise", 5)
  assert abs(float(noisy.mean()) - 0.5) < 0.01 and float(noisy.std()) > 0.05
  # The fog layer spans [0, 1] and needs a power-of-2 size.
  layer = robustness.plasma_fractal(jax.random.key(3), 16, 2.0)
  assert float(layer.min()) == 0.0 and float(layer.max()) == 1.0
  with pytest.raises(ValueError, match="power-of-2"):
    robustness.plasma_fractal(jax.random.key(3), 24, 2.0)


def test_auroc_by_hand():
  assert robustness.auroc(np.array([0.1, 0.2]), np.array([0.3, 0.4])) == 100.0
  assert robustness.auroc(np.array([0.3, 0.4]), np.array([0.1, 0.2])) == 0.0
  # Pairs (in, out): (1, 2) right, (3, 2) wrong, (1, 1) tie, (3, 1) wrong -> 1.5 of 4.
  assert robustness.auroc(np.array([1.0, 3.0]), np.array([2.0, 1.0])) == pytest.approx(37.5)


def test_ood_scores():
  logits = np.array([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
  scores = robustness.ood_scores(logits, np.array([0.1, 0.1]))
  assert scores["msp"][1] > scores["msp"][0]  # the uniform prediction looks more OOD
  np.testing.assert_allclose(scores["rotation_minus_kl"][1], 0.1, atol=1e-6)  # KL(U || U) = 0
  assert scores["rotation_minus_kl"][1] > scores["rotation_minus_kl"][0]


@pytest.fixture(scope="module")
def setup():
  config = helpers.tiny_config(robustness_config.get_config("quick"), **{"robustness.corruptions": ["gaussian_noise"], "robustness.ood_data": "builtin:patterns"})
  method = methods.make_method(config, num_classes=10)
  tx = optim.make_optimizer(config)
  state = train.create_train_state(method, tx, jax.random.key(0))
  return config, method, tx, state, _batch(config)


def test_loss_is_classification_plus_weighted_rotation(setup):
  config, method, _, state, batch = setup
  total, aux = method.loss(state.params, state.extra, batch, jax.random.key(1), 0)
  metrics = aux["metrics"]
  expected = metrics["classification_loss"] + config.robustness.aux_weight * metrics["rotation_loss"]
  np.testing.assert_allclose(total, expected, rtol=1e-6)
  assert config.robustness.aux_weight == 0.5 and robustness_config.get_config("baseline").robustness.aux_weight == 0.0


def test_baseline_is_plain_supervised_training(setup):
  """Without the auxiliary loss the backbone sees the upright images only, so its BN statistics
  and the loss are those of ordinary supervised training."""
  config, _, tx, _, batch = setup
  baseline_config = config.copy_and_resolve_references()
  baseline_config.robustness.aux_weight = 0.0
  method = methods.make_method(baseline_config, num_classes=10)
  state = train.create_train_state(method, tx, jax.random.key(0))
  total, aux = method.loss(state.params, state.extra, batch, jax.random.key(1), 0)
  (images,) = view_images(jax.random.key(1), (batch["view0"],), method.view_specs[:1])
  features, stats = method.backbone(state.params["backbone"], state.extra["batch_stats"]["backbone"], images, train=True)
  logits, _ = method.classifier(state.params["classifier"], {}, features, train=True)
  np.testing.assert_allclose(total, losses.softmax_cross_entropy(logits, batch["label"]), rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), aux["batch_stats"]["backbone"], stats)
  assert "rotation_loss" not in aux["metrics"]


def test_one_step_same_on_1_and_8_devices_float64(setup):
  config, method, tx, state, batch = setup
  loss, _, _ = compare_one_step_float64(method, tx, config, state, {k: batch[k] for k in ("view0", "label")})
  assert np.isfinite(loss)


def test_class_logits_are_classifys_at_a_quarter_of_the_cost(setup):
  _, method, _, state, batch = setup
  images = batch["view0"].astype(np.float32) / 255.0
  logits, rotation_loss = method.classify(state.params, state.extra, images)
  np.testing.assert_allclose(method.class_logits(state.params, state.extra, images), logits, rtol=1e-5, atol=1e-5)
  assert rotation_loss.shape == (images.shape[0],)


def test_evaluation_reports_clean_corrupted_and_ood(setup):
  config, method, _, state, _ = setup
  rng = np.random.default_rng(0)
  test = {"image": rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8), "label": rng.integers(0, 10, 40).astype(np.int32)}
  spec = DataSpec.from_config(config.data)
  results = robustness.evaluate(config, method, parallel.make_mesh(), state.params, state.extra, test, spec)
  assert set(results) >= {"robustness_clean_top1", "robustness_corrupted_top1", "robustness_gaussian_noise_5_top1", "robustness_ood_auroc_msp", "robustness_ood_auroc_rotation_minus_kl"}
  assert all(0.0 <= v <= 100.0 for v in results.values())
