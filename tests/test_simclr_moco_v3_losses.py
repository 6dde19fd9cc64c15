"""NT-Xent (SimCLR) and MoCo v3's InfoNCE against closed forms and a NumPy loop written from the papers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxssl import losses


def _normalize(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _nt_xent_numpy(z1, z2, tau):
  """SimCLR algorithm 1, one anchor at a time: l(i, j) = -log exp(s_ij) / sum_{k != i} exp(s_ik)."""
  z = _normalize(np.concatenate([z1, z2]).astype(np.float64))
  n, half = len(z), len(z1)
  total = 0.0
  for i in range(n):
    positive = (i + half) % n
    others = [np.exp(z[i] @ z[k] / tau) for k in range(n) if k != i]
    total += -np.log(np.exp(z[i] @ z[positive] / tau) / np.sum(others))
  return total / n


def _ctr_numpy(q, k, tau):
  """MoCo v3 algorithm 1's ctr(q, k): cross-entropy of q_i against all keys, positive k_i, times 2 tau."""
  q, k = _normalize(q.astype(np.float64)), _normalize(k.astype(np.float64))
  total = 0.0
  for i in range(len(q)):
    scores = np.array([q[i] @ k[j] / tau for j in range(len(k))])
    total += -(scores[i] - np.log(np.sum(np.exp(scores))))
  return total / len(q) * 2 * tau


def test_nt_xent_closed_form():
  # Two images whose views coincide and are orthogonal to the other image's: each anchor has
  # similarity 1 to its positive and 0 to both negatives, so L = log((e + 2) / e) at tau = 1.
  z = np.eye(2, dtype=np.float32)
  np.testing.assert_allclose(losses.nt_xent_loss(z, z, 1.0), np.log((np.e + 2) / np.e), rtol=1e-6)
  # The scale of z does not matter (cosine similarity); the temperature does.
  np.testing.assert_allclose(losses.nt_xent_loss(3 * z, z, 0.5), np.log((np.e**2 + 2) / np.e**2), rtol=1e-6)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_matches_numpy_loop(tau):
  rng = np.random.default_rng(0)
  z1, z2 = rng.normal(size=(2, 6, 5)).astype(np.float32)
  np.testing.assert_allclose(losses.nt_xent_loss(z1, z2, tau), _nt_xent_numpy(z1, z2, tau), rtol=1e-5)


def test_nt_xent_gradients_finite_and_symmetric_in_views():
  rng = np.random.default_rng(1)
  z1, z2 = jnp.asarray(rng.normal(size=(2, 4, 3)), jnp.float32)
  grads = jax.grad(losses.nt_xent_loss, argnums=(0, 1))(z1, z2, 0.2)
  assert all(np.isfinite(g).all() for g in grads)
  # Swapping the views permutes the 2B anchors, which leaves the mean unchanged.
  np.testing.assert_allclose(losses.nt_xent_loss(z1, z2, 0.2), losses.nt_xent_loss(z2, z1, 0.2), rtol=1e-6)


def test_moco_v3_closed_form():
  # q_i = k_i orthonormal, tau = 1: each ctr term is -log(e / (e + 1)) * 2, and there are two.
  q = np.eye(2, dtype=np.float32)
  expected = 2 * 2 * np.log((np.e + 1) / np.e)
  np.testing.assert_allclose(losses.moco_v3_loss((q, q), (q, q), 1.0), expected, rtol=1e-6)


@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_moco_v3_matches_numpy_loop(tau):
  rng = np.random.default_rng(2)
  q1, q2, k1, k2 = rng.normal(size=(4, 6, 5)).astype(np.float32)
  expected = _ctr_numpy(q1, k2, tau) + _ctr_numpy(q2, k1, tau)
  np.testing.assert_allclose(losses.moco_v3_loss((q1, q2), (k1, k2), tau), expected, rtol=1e-5)


def test_moco_v3_keys_get_no_gradient():
  rng = np.random.default_rng(3)
  q1, q2, k1, k2 = jnp.asarray(rng.normal(size=(4, 4, 3)), jnp.float32)
  grad_q, grad_k = jax.grad(lambda q, k: losses.moco_v3_loss(q, k, 0.2), argnums=(0, 1))((q1, q2), (k1, k2))
  assert all(np.abs(g).max() > 0 for g in grad_q)
  assert all(np.abs(g).max() == 0 for g in grad_k)
