"""SwAV: Sinkhorn-Knopp, the swapped-prediction loss, prototypes, queue, the frozen-parameter
optimizer, and one step on 1 and on 8 simulated devices."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import special

from jaxssl import losses, methods, optim, train
from jaxssl.data import pipeline, sources, views
from jaxssl.transforms import augment
from tests import helpers
from tests.test_byol import _compare_one_step


def _numpy_sinkhorn(scores, epsilon, iterations):
  """Algorithm 1 of the SwAV paper (appendix), in float64 NumPy: Q is K x B."""
  q = np.exp(scores.astype(np.float64) / epsilon).T
  num_prototypes, batch = q.shape
  q /= q.sum()
  for _ in range(iterations):
    q /= q.sum(axis=1, keepdims=True)
    q /= num_prototypes
    q /= q.sum(axis=0, keepdims=True)
    q /= batch
  return (q * batch).T


def test_sinkhorn_matches_the_papers_algorithm():
  scores = np.random.default_rng(0).uniform(-1, 1, (24, 10)).astype(np.float32)
  codes = np.asarray(losses.sinkhorn_knopp(jnp.asarray(scores), epsilon=0.05, num_iterations=3))
  np.testing.assert_allclose(codes, _numpy_sinkhorn(scores, 0.05, 3), rtol=1e-4, atol=1e-6)


def test_sinkhorn_marginals():
  batch, num_prototypes = 32, 8
  scores = np.random.default_rng(1).uniform(-1, 1, (batch, num_prototypes)).astype(np.float32)
  codes = np.asarray(losses.sinkhorn_knopp(jnp.asarray(scores), epsilon=0.05, num_iterations=100))
  np.testing.assert_allclose(codes.sum(axis=1), 1.0, atol=1e-3)  # every example one unit of mass
  np.testing.assert_allclose(codes.sum(axis=0), batch / num_prototypes, atol=1e-3)  # equipartition
  assert (codes >= 0).all()


def test_sinkhorn_finite_for_bfloat16_and_large_scores():
  # exp(60 / 0.05) overflows any float type; in bfloat16 the inputs are also coarse.
  scores = jnp.asarray(np.random.default_rng(2).normal(0, 60, (16, 6)), jnp.bfloat16)
  with np.errstate(over="ignore"):
    assert not np.isfinite(np.exp(np.asarray(scores, np.float32) / 0.05)).all()
  codes = np.asarray(losses.sinkhorn_knopp(scores, epsilon=0.05, num_iterations=3))
  assert codes.dtype == np.float32 and np.isfinite(codes).all()
  np.testing.assert_allclose(codes.sum(axis=1), 1.0, atol=1e-3)
  # The same iterations in float64 and the log domain (where nothing overflows) agree.
  log_q = np.asarray(scores, np.float64) / 0.05
  log_q -= special.logsumexp(log_q)
  for _ in range(3):
    log_q -= special.logsumexp(log_q, axis=0, keepdims=True) + np.log(6)
    log_q -= special.logsumexp(log_q, axis=1, keepdims=True) + np.log(16)
  np.testing.assert_allclose(codes, np.exp(log_q) * 16, atol=1e-5)


def test_swav_loss_by_hand():
  rng = np.random.default_rng(3)
  num_crops, batch, num_prototypes, temperature = 4, 5, 6, 0.1
  logits = rng.normal(size=(num_crops, batch, num_prototypes)).astype(np.float32)
  codes = rng.dirichlet(np.ones(num_prototypes), size=(2, batch)).astype(np.float32)
  expected = 0.0
  for i in range(2):  # codes of the two global crops
    sub = 0.0
    for v in range(num_crops):
      if v == i:
        continue
      z = logits[v] / temperature
      log_p = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(1, keepdims=True)
      sub += np.mean(-np.sum(codes[i] * log_p, axis=1))
    expected += sub / (num_crops - 1)
  expected /= 2
  got = float(losses.swav_loss(jnp.asarray(logits), jnp.asarray(codes), temperature))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_frozen_parameters_are_untouched_then_trained_as_if_fresh():
  """A frozen group gets no update, decay or momentum; it then starts as a fresh optimizer
  would, at the learning rate of the step it resumes at."""
  schedule = lambda step: 0.1 * (1.0 + step)
  make = lambda lr: optax.chain(optax.add_decayed_weights(0.5), optax.sgd(lr, momentum=0.9))
  tx = optim.frozen_for_first_steps(make, schedule, steps=3)
  params = {"w": jnp.asarray([1.0, -2.0])}
  grads = {"w": jnp.asarray([0.3, 0.1])}
  state = tx.init(params)
  for _ in range(3):
    updates, state = tx.update(grads, state, params)
    np.testing.assert_array_equal(updates["w"], 0.0)
  updates, state = tx.update(grads, state, params)
  # A fresh SGD's first step with momentum: -lr(3) * (g + 0.5 w).
  np.testing.assert_allclose(updates["w"], -0.4 * (np.asarray([0.3, 0.1]) + 0.5 * np.asarray([1.0, -2.0])), rtol=1e-6)


def test_clip_each_by_norm():
  grads = {"a": jnp.asarray([3.0, 4.0]), "b": jnp.asarray([0.3, 0.4])}
  clipped, _ = optim.clip_each_by_norm(1.0).update(grads, optax.EmptyState())
  np.testing.assert_allclose(clipped["a"], [0.6, 0.8], rtol=1e-5)
  np.testing.assert_allclose(clipped["b"], [0.3, 0.4], rtol=1e-6)  # already within the norm


@pytest.fixture(scope="module")
def setup():
  config = helpers.tiny_swav_config(**{"swav.queue_length": 16})
  source = sources.make_source(config.data, "train")
  data = pipeline.make_train_iterator(
      source, seed=0, per_process_batch_size=config.batch_size,
      view_specs=pipeline.host_view_specs(config.augment.views),
      **views.local_view_settings(config.augment), process_index=0, process_count=1,
  )
  batch = next(data)
  data.close()
  method = methods.make_method(config, num_classes=10)
  tx = optim.make_optimizer(config)
  state = train.create_train_state(method, tx, jax.random.key(0))
  return config, method, tx, state, batch


def test_prototypes_are_unit_vectors(setup):
  _, method, _, state, _ = setup
  np.testing.assert_allclose(np.linalg.norm(state.params["prototypes"]["kernel"], axis=0), 1.0, rtol=1e-6)
  moved = jax.tree.map(lambda x: 3.0 * x + 0.1, state.params)
  np.testing.assert_allclose(np.linalg.norm(method.project_params(moved)["prototypes"]["kernel"], axis=0), 1.0, rtol=1e-6)


def test_queue_starts_at_its_step_and_keeps_the_newest_first(setup):
  _, method, _, state, _ = setup
  extra = state.extra
  embeddings = jnp.ones((2, 16, 8))
  assert method._updated_queue(extra, embeddings, jnp.asarray(-1))["queue_size"] == 0  # before queue_start_step
  updated = method._updated_queue(extra, embeddings, jnp.asarray(0))
  assert int(updated["queue_size"]) == 16
  np.testing.assert_array_equal(updated["queue"], 1.0)
  again = method._updated_queue(updated, 2 * embeddings, jnp.asarray(1))
  np.testing.assert_array_equal(again["queue"][:, :16], 2.0)  # queue_length 16: only the newest


def test_one_step_same_on_1_and_8_devices_float64(setup):
  """Loss, gradients and new state (queue included, in use) agree on 1 and 8 devices; on-device
  augmentation is the identity here (float32 only; it is tested on its own)."""
  config, method, tx, state, batch = setup
  saved = method.view_specs, method.local_spec
  identity = augment.AugmentSpec(brightness=0, contrast=0, saturation=0, hue=0, jitter_prob=0, grayscale_prob=0, blur_prob=0, solarize_prob=0)
  method.view_specs, method.local_spec = (identity, identity), identity
  # A full queue of unit vectors, so the Sinkhorn step runs over queue + global batch.
  queue = losses.l2_normalize(jax.random.normal(jax.random.key(1), state.extra["queue"].shape))
  state = state.replace(extra={**state.extra, "queue": queue, "queue_size": jnp.asarray(16, jnp.int32)})
  jax.config.update("jax_enable_x64", True)
  try:
    state64 = jax.tree.map(lambda x: x.astype(jnp.float64) if x.dtype == jnp.float32 else x, state)
    _compare_one_step((config, method, tx, state64, batch), tolerance=1e-5)
  finally:
    jax.config.update("jax_enable_x64", False)
    method.view_specs, method.local_spec = saved
