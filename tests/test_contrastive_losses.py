"""InfoNCE (MoCo, end-to-end) and NPID's NCE loss against NumPy written from the papers'
equations; the queue's FIFO order; the memory bank's update; the momentum update."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import losses
from jaxssl.errors import UserError
from jaxssl.methods import dictionaries, npid


def _unit(rng, *shape):
  x = rng.normal(size=shape)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_info_nce_by_hand():
  rng = np.random.default_rng(0)
  q, k, queue = _unit(rng, 3, 4), _unit(rng, 3, 4), _unit(rng, 5, 4)
  tau = 0.2
  expected = 0.0
  for b in range(3):
    positive = np.exp(q[b] @ k[b] / tau)
    negatives = sum(np.exp(q[b] @ n / tau) for n in queue)
    expected += -np.log(positive / (positive + negatives)) / 3
  np.testing.assert_allclose(losses.info_nce(q, k, queue, tau), expected, rtol=1e-5)


def test_info_nce_tiny_case_in_closed_form():
  # q = k+ = e1, one negative e2 (orthogonal): L = -log(e^{1/tau} / (e^{1/tau} + 1)).
  e1, e2 = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
  tau = 0.5
  np.testing.assert_allclose(losses.info_nce(e1, e1, e2, tau), np.log1p(np.exp(-2.0)), rtol=1e-6)


def test_in_batch_info_nce_by_hand():
  rng = np.random.default_rng(1)
  q, k = _unit(rng, 4, 3), _unit(rng, 4, 3)
  tau = 0.07
  expected = np.mean([-np.log(np.exp(q[i] @ k[i] / tau) / sum(np.exp(q[i] @ k[j] / tau) for j in range(4))) for i in range(4)])
  np.testing.assert_allclose(losses.in_batch_info_nce(q, k, tau), expected, rtol=1e-5)


def test_nce_loss_by_hand():
  rng = np.random.default_rng(2)
  positive, negative = rng.uniform(-1, 1, 3), rng.uniform(-1, 1, (3, 5))
  tau, z, n = 0.07, 40.0, 1000
  noise = 5 / n  # m * P_n with m = 5 noise samples and P_n = 1/N
  expected = 0.0
  for b in range(3):
    p = np.exp(positive[b] / tau) / z
    term = np.log(p / (p + noise))
    for s in negative[b]:
      p_noise = np.exp(s / tau) / z
      term += np.log(1 - p_noise / (p_noise + noise))
    expected -= term / 3
  np.testing.assert_allclose(losses.nce_loss(positive, negative, tau, np.log(z), n), expected, rtol=1e-5)


def test_log_normalizer_estimate_by_hand():
  s = np.array([[0.1, -0.3, 0.5], [0.2, 0.0, -0.1]])
  expected = np.log(np.mean(np.exp(s / 0.07)) * 500)
  np.testing.assert_allclose(npid.estimate_log_normalizer(jnp.asarray(s), 0.07, 500), expected, rtol=1e-5)


def test_queue_is_fifo_and_wraps_around():
  queue = {"keys": jnp.zeros((6, 1)), "pointer": jnp.zeros((), jnp.int32)}
  written = []
  for batch in range(4):  # 4 batches of 2 into 6 slots: the 4th overwrites the 1st
    keys = jnp.asarray([[10.0 * batch + 1], [10.0 * batch + 2]])
    queue = dictionaries.enqueue(queue, keys)
    written.append(np.asarray(keys[:, 0]))
    assert int(queue["pointer"]) == 2 * (batch + 1) % 6
  np.testing.assert_array_equal(queue["keys"][:, 0], [31, 32, 11, 12, 21, 22])


def test_queue_size_must_be_a_multiple_of_the_batch():
  with pytest.raises(UserError, match=r"queue_size=100 is not a multiple of the global batch size config.batch_size=16.*e.g. 96"):
    dictionaries.check_queue_size(100, 16)
  dictionaries.check_queue_size(96, 16)


def test_momentum_update():
  target = {"w": jnp.asarray([1.0, 2.0])}
  online = {"w": jnp.asarray([3.0, -2.0])}
  new = dictionaries.momentum_update(target, online, 0.9)
  np.testing.assert_allclose(new["w"], [0.9 * 1 + 0.1 * 3, 0.9 * 2 - 0.1 * 2], rtol=1e-6)


def test_memory_bank_update_by_hand():
  rng = np.random.default_rng(3)
  bank, features = _unit(rng, 5, 3).astype(np.float32), _unit(rng, 2, 3).astype(np.float32)
  indices = np.array([3, 0])
  new = np.asarray(dictionaries.update_memory_bank(jnp.asarray(bank), jnp.asarray(indices), jnp.asarray(features), 0.5))
  for row, i in enumerate(indices):
    mixed = 0.5 * bank[i] + 0.5 * features[row]
    np.testing.assert_allclose(new[i], mixed / np.linalg.norm(mixed), rtol=1e-5)
  np.testing.assert_array_equal(new[[1, 2, 4]], bank[[1, 2, 4]])  # untouched rows
