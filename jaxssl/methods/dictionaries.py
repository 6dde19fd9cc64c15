"""Dictionaries of keys for contrastive methods, and the pieces that build them.

A contrastive method compares each query with one positive key and many negative keys. Where
the negatives come from is the "dictionary" (He et al. 2020, fig. 2):

  queue        the keys of the last K / B batches, first in first out (MoCo);
  memory bank  one slot per training example, refreshed with momentum when the example is seen
               and sampled for negatives (Wu et al. 2018, NPID);
  end-to-end   the keys of the current batch only (no state).

Everything here is a small pure function of explicit arrays, so the dictionaries live in the
train state's `extra` and can be sharded over devices like any other array.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxssl import losses
from jaxssl.errors import UserError


def momentum_update(target: Any, online: Any, momentum: jax.Array | float) -> Any:
  """theta_k <- m theta_k + (1 - m) theta_q, leaf by leaf (He et al. 2020, eq. 2)."""
  return jax.tree.map(lambda t, o: momentum * t + (1.0 - momentum) * o, target, online)


# ----------------------------------------------------------------------------------------------
# Queue (MoCo).
# ----------------------------------------------------------------------------------------------


def check_queue_size(queue_size: int, batch_size: int, views_enqueued: int = 1) -> None:
  """A queue of K keys takes whole steps' keys, so it never has to wrap around mid-batch."""
  keys = batch_size * views_enqueued
  if queue_size < keys or queue_size % keys:
    per_step = f"the global batch size config.batch_size={batch_size}"
    if views_enqueued > 1:
      per_step = f"the {keys} keys enqueued per step (config.batch_size={batch_size}, {views_enqueued} views each)"
    raise UserError(
        f"The MoCo queue size config.moco.queue_size={queue_size} is not a multiple of {per_step}; "
        f"set it to a multiple of {keys}, e.g. {max(1, round(queue_size / keys)) * keys}."
    )


def init_queue(rng: jax.Array, queue_size: int, dim: int, track_age: bool = False) -> dict:
  """A queue of random unit vectors (as in the official MoCo code) and its write pointer.

  With `track_age`, also each slot's age in enqueues ('age', int32, 0 for the initial random
  keys), for VideoMoCo's temporal decay (`temporal_decay_weights`).
  """
  keys = losses.l2_normalize(jax.random.normal(rng, (queue_size, dim), jnp.float32))
  queue = {"keys": keys, "pointer": jnp.zeros((), jnp.int32)}
  if track_age:
    queue["age"] = jnp.zeros((queue_size,), jnp.int32)
  return queue


def enqueue(queue: dict, keys: jax.Array) -> dict:
  """Writes the batch's keys over the oldest ones and advances the pointer (FIFO).

  `keys` [B, D] is the GLOBAL batch of keys: under a sharded `jit` the batch axis spans every
  device, so this is the all-gathered enqueue of the paper. K % B == 0 (`check_queue_size`),
  so a batch never straddles the end of the queue; the pointer wraps to 0 after the last slot.
  A queue with ages (VideoMoCo) ages every slot by one enqueue and gives the slots just written
  age 1, as the official code's `count` buffer.
  """
  size, batch = queue["keys"].shape[0], keys.shape[0]
  pointer = queue["pointer"]
  start = (pointer, jnp.zeros_like(pointer))  # index types must match (int32 even under x64)
  updated = {
      "keys": jax.lax.dynamic_update_slice(queue["keys"], keys.astype(queue["keys"].dtype), start),
      "pointer": (pointer + batch) % size,
  }
  if "age" in queue:
    updated["age"] = jax.lax.dynamic_update_slice(queue["age"] + 1, jnp.ones((batch,), queue["age"].dtype), start[:1])
  return updated


def temporal_decay_weights(age: jax.Array, decay: float) -> jax.Array:
  """VideoMoCo's weight t^age of each queued key (Pan et al. 2021): a key enqueued `age`
  steps ago, by an encoder that has moved on since, counts less as a negative."""
  return jnp.power(jnp.float32(decay), age.astype(jnp.float32))


# ----------------------------------------------------------------------------------------------
# Memory bank (NPID, and MoCo's memory-bank baseline).
# ----------------------------------------------------------------------------------------------


def memory_bank_size(configured: int, num_train_examples: int) -> int:
  """`configured` rows if set, else one per record trained on (the loop counts them, after
  `config.data.train_examples`)."""
  if configured:
    return int(configured)
  if not num_train_examples:
    raise UserError("A memory bank of one entry per training record needs the number of records; set its bank_size in the config.")
  return int(num_train_examples)


def init_memory_bank(rng: jax.Array, num_examples: int, dim: int) -> jax.Array:
  """One random unit vector per training example, [N, D]."""
  return losses.l2_normalize(jax.random.normal(rng, (num_examples, dim), jnp.float32))


def update_memory_bank(bank: jax.Array, indices: jax.Array, features: jax.Array, momentum: float) -> jax.Array:
  """v_i <- norm(m v_i + (1 - m) f_i) for the batch's examples (Wu et al. 2018, sec. 3.2).

  `indices` must be distinct within a batch (they are: a batch holds different examples).
  """
  mixed = momentum * bank[indices] + (1.0 - momentum) * features.astype(bank.dtype)
  return bank.at[indices].set(losses.l2_normalize(mixed).astype(bank.dtype))


def sample_negatives(rng: jax.Array, bank: jax.Array, num_negatives: int) -> jax.Array:
  """`num_negatives` bank entries drawn uniformly (NPID's noise distribution P_n = 1/N), [K, D].

  One draw is shared by the whole batch; Wu et al. draw per example, which has the same
  expectation but needs B x K x D memory.
  """
  indices = jax.random.randint(rng, (num_negatives,), 0, bank.shape[0])
  return bank[indices]


def check_indices(batch: dict, method: str) -> jax.Array:
  if "index" not in batch:
    raise UserError(
        f"{method} needs each example's dataset index, but the batch has only the keys "
        f"{sorted(batch)}; the training loop's grain pipeline adds 'index' to every batch."
    )
  return batch["index"]


# ----------------------------------------------------------------------------------------------
# Per-sub-batch BatchNorm.
# ----------------------------------------------------------------------------------------------


def check_groups(batch_size: int, num_groups: int) -> None:
  if num_groups < 1 or batch_size % num_groups or batch_size // num_groups < 2:
    raise UserError(
        f"config.moco.bn_groups={num_groups} must split config.batch_size={batch_size} into equal "
        f"sub-batches of at least 2 examples; choose a divisor of {batch_size} up to {batch_size // 2}."
    )


def apply_in_groups(fn: Callable[[jax.Array], tuple[Any, Any]], images: jax.Array, num_groups: int) -> tuple[Any, Any]:
  """Runs `fn(images) -> (outputs, batch_stats)` on `num_groups` contiguous sub-batches.

  BatchNorm inside `fn` then normalises each sub-batch by its own statistics, as it would on
  one GPU of a data-parallel PyTorch run; this is how shuffle-BN is written in the global view.
  Outputs are concatenated back in order; the updated running statistics are averaged over
  groups (each group's update is m * old + (1 - m) * its batch statistic).
  """
  if num_groups == 1:
    return fn(images)
  batch = images.shape[0]
  grouped = images.reshape(num_groups, batch // num_groups, *images.shape[1:])
  outputs, stats = jax.vmap(fn)(grouped)
  outputs = jax.tree.map(lambda y: y.reshape(batch, *y.shape[2:]), outputs)
  return outputs, jax.tree.map(lambda s: jnp.mean(s, axis=0), stats)


def apply_shuffled_in_groups(
    fn: Callable[[jax.Array], tuple[Any, Any]], images: jax.Array, num_groups: int, rng: jax.Array
) -> tuple[Any, Any]:
  """`apply_in_groups` on a random permutation of the batch, outputs returned in batch order.

  The key of example i is then normalised together with a random set of other examples, not
  with the sub-batch of its query, so BatchNorm cannot leak which key is the positive (MoCo's
  shuffle-BN, He et al. 2020, sec. 3.3).
  """
  permutation = shuffle_permutation(rng, images.shape[0])
  outputs, stats = apply_in_groups(fn, images[permutation], num_groups)
  inverse = jnp.argsort(permutation)
  return jax.tree.map(lambda y: y[inverse], outputs), stats


def shuffle_permutation(rng: jax.Array, batch_size: int) -> jax.Array:
  return jax.random.permutation(rng, batch_size)
