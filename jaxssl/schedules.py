"""Schedules as small pure functions of the step (learning rate, EMA decay, ...).

All take the step as a JAX or Python scalar so they work inside `jax.jit`.
"""

from __future__ import annotations

import jax.numpy as jnp


def warmup_cosine(step, *, base_value: float, total_steps: int, warmup_steps: int, final_value: float = 0.0):
  """Linear warm-up from 0 to `base_value`, then cosine decay to `final_value` at `total_steps`.

  lr(k) = base * k / W                                   for k < W
  lr(k) = final + (base - final) * (1 + cos(pi * (k - W) / (K - W))) / 2   otherwise
  """
  step = jnp.asarray(step, jnp.float32)
  warmup = base_value * step / max(warmup_steps, 1)
  progress = jnp.clip((step - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0, 1.0)
  cosine = final_value + (base_value - final_value) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
  return jnp.where(step < warmup_steps, warmup, cosine)


def cosine_increase(step, *, base_value: float, total_steps: int, final_value: float = 1.0):
  """BYOL's target decay: tau(k) = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2.

  Starts at `base_value` and rises to `final_value` (1.0 in the paper) at step K.
  """
  progress = jnp.clip(jnp.asarray(step, jnp.float32) / max(total_steps, 1), 0.0, 1.0)
  return final_value - (final_value - base_value) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0


def scaled_learning_rate(base_learning_rate: float, batch_size: int, reference_batch_size: int = 256) -> float:
  """The linear scaling rule of Goyal et al. 2017 used by SimCLR/BYOL: lr = base * B / 256."""
  return base_learning_rate * batch_size / reference_batch_size


def linear_warmup_then_constant(step, *, start_value: float, final_value: float, warmup_steps: int):
  """Linear ramp from `start_value` at step 0 to `final_value` at `warmup_steps`, then constant.

  DINO's teacher temperature: 0.04 -> 0.07 over the first 30 epochs (Caron et al. 2021, sec. 4.2
  and appendix); the reference steps it per epoch, this per step.
  """
  progress = jnp.clip(jnp.asarray(step, jnp.float32) / max(warmup_steps, 1), 0.0, 1.0)
  return start_value + (final_value - start_value) * progress
