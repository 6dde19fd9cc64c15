"""Pieces every image method shares: augmented views, the online probe, collapse statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxssl import losses
from jaxssl.transforms import augment


def view_images(rng: jax.Array, views: tuple[jax.Array, ...], specs: tuple[augment.AugmentSpec, ...]) -> list[jax.Array]:
  """Applies each view's on-device augmentation and normalisation (independent keys per view)."""
  keys = jax.random.split(rng, len(views))
  return [augment.normalize(augment.augment_images(k, v, s)) for k, v, s in zip(keys, views, specs)]


def embedding_std(embeddings: jax.Array) -> jax.Array:
  """Mean over dimensions of the per-dimension std of L2-normalised embeddings.

  About 1/sqrt(D) for healthy embeddings spread over the sphere, 0 for collapse (Chen & He 2021).
  """
  return jnp.mean(jnp.std(losses.l2_normalize(embeddings), axis=0))


def linear_probe_loss(probe, params, features, labels):
  """Cross-entropy and accuracy of the online probe on stop-gradient features.

  The probe trains at the method's learning rate. The backbone's pooled features are not
  normalised and their scale drifts during training: on the raw features the probe's loss went
  to 20-40 at a base learning rate of 1.6.
  """
  # Standardised and divided by sqrt(D), the inputs have unit norm on average, which keeps the
  # probe's curvature, and so its stable learning rates, independent of the feature width.
  inputs = losses.batch_standardize(jax.lax.stop_gradient(features)) / jnp.sqrt(features.shape[-1])
  logits, _ = probe(params, {}, inputs, train=True)
  valid = labels >= 0
  accuracy = jnp.sum((jnp.argmax(logits, -1) == labels) * valid) / jnp.maximum(jnp.sum(valid), 1)
  return losses.softmax_cross_entropy(logits, labels, valid), accuracy
