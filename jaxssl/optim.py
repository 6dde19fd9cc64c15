"""Optimizers from config: LARS / AdamW / SGD with weight-decay masks and per-module lr scales."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxssl import schedules

OPTIMIZERS = ("lars", "adamw", "sgd")


# Top-level parameter groups that are evaluation devices, not part of the representation.
PROBE_KEYS = ("probe",)


def decay_mask(params: Any) -> Any:
  """True for weight matrices and conv kernels, False for biases and norm scales/offsets.

  BYOL/SimCLR exclude biases and BatchNorm parameters (all 1-D) from weight decay and from
  LARS' trust ratio. `optax.lars` applies both to everything unless given this mask. The online
  linear probe is excluded too: it only measures the representation, and LARS' small trust
  ratio would keep it from fitting in short runs.
  """

  def keep(path, p):
    top = getattr(path[0], "key", None) if path else None
    return p.ndim > 1 and top not in PROBE_KEYS

  return jax.tree_util.tree_map_with_path(keep, params)


def learning_rate_schedule(config: ml_collections.ConfigDict) -> Callable[[Any], Any]:
  """Warm-up + cosine schedule with the linear scaling rule lr = base * batch / 256.

  The cosine ends at `optimizer.final_learning_rate_fraction` (default 0) of the peak.
  """
  opt = config.optimizer
  peak = schedules.scaled_learning_rate(opt.base_learning_rate, config.batch_size)
  return lambda step: schedules.warmup_cosine(
      step, base_value=peak, total_steps=config.total_steps, warmup_steps=opt.warmup_steps,
      final_value=peak * opt.get("final_learning_rate_fraction", 0.0),
  )


def _base_optimizer(opt: ml_collections.ConfigDict, learning_rate) -> optax.GradientTransformation:
  if opt.name == "lars":
    mask = decay_mask if opt.exclude_bias_and_norm else True
    return optax.lars(
        learning_rate,
        weight_decay=opt.weight_decay,
        weight_decay_mask=mask,
        trust_coefficient=opt.trust_coefficient,
        trust_ratio_mask=mask,
        momentum=opt.momentum,
    )
  if opt.name == "adamw":
    return optax.adamw(
        learning_rate, weight_decay=opt.weight_decay, mask=decay_mask if opt.exclude_bias_and_norm else None
    )
  if opt.name == "sgd":
    return optax.chain(
        optax.add_decayed_weights(opt.weight_decay, mask=decay_mask if opt.exclude_bias_and_norm else None),
        optax.sgd(learning_rate, momentum=opt.momentum),
    )
  raise ValueError(f"config.optimizer.name '{opt.name}' is not known; choose one of {OPTIMIZERS}.")


def module_learning_rates(config: ml_collections.ConfigDict) -> dict[str, Callable[[Any], Any]]:
  """Schedules of the top-level modules whose learning rate differs from the default one.

  `optimizer.lr_multipliers` {module: factor} scales a module's schedule (BraVe's predictor x10);
  `optimizer.constant_lr_modules` (module names) holds a module at the peak learning rate from the
  first step to the last, with no warm-up and no decay (SimSiam's predictor, Chen & He 2021, 4.4).
  """
  opt = config.optimizer
  schedule = learning_rate_schedule(config)
  peak = schedules.scaled_learning_rate(opt.base_learning_rate, config.batch_size)
  multipliers = dict(opt.get("lr_multipliers", {}) or {})
  constant = tuple(opt.get("constant_lr_modules", ()) or ())

  def module_schedule(name):
    factor = multipliers.get(name, 1.0)
    if name in constant:
      return lambda step: factor * jnp.full(jnp.shape(step), peak, jnp.float32)
    return lambda step: factor * schedule(step)

  return {name: module_schedule(name) for name in (*multipliers, *constant)}


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The optimizer for `config`; modules in `module_learning_rates` get their own schedule.

  Modules not named there use the default warm-up + cosine schedule.
  """
  opt = config.optimizer
  special = module_learning_rates(config)
  if not special:
    tx = _base_optimizer(opt, learning_rate_schedule(config))
  else:
    transforms = {"default": _base_optimizer(opt, learning_rate_schedule(config))}
    transforms.update({name: _base_optimizer(opt, lr) for name, lr in special.items()})
    label = lambda params: {k: jax.tree.map(lambda _, k=k: k if k in special else "default", v) for k, v in params.items()}
    tx = optax.multi_transform(transforms, label)
  if opt.get("grad_clip_norm"):
    tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
  return tx
