"""Optimizers from config: LARS / AdamW / SGD with weight-decay masks and per-module lr scales."""

from __future__ import annotations

from typing import Any, Callable

import jax
import ml_collections
import optax

from jaxssl import schedules
from jaxssl.models.vit import PATCH_EMBEDDING

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


def freezes_patch_embedding(config: ml_collections.ConfigDict) -> bool:
  """Whether the config asks for MoCo v3's frozen random patch projection of a ViT."""
  vit_options = config.model.get("vit", None) or {}
  return config.model.backbone.startswith("vit") and bool(vit_options.get("freeze_patch_embedding", False))


def frozen_mask(params: Any) -> Any:
  """True for the ViT patch projection's parameters (any top-level module), else False.

  The model already stops their gradient; the optimizer must not move them either, and AdamW's
  decoupled weight decay would, so `make_optimizer` zeroes their updates.
  """

  def frozen(path, _):
    return PATCH_EMBEDDING in [getattr(entry, "key", None) for entry in path]

  return jax.tree_util.tree_map_with_path(frozen, params)


def learning_rate_schedule(config: ml_collections.ConfigDict) -> Callable[[Any], Any]:
  """Warm-up + cosine schedule with the linear scaling rule lr = base * batch / 256."""
  opt = config.optimizer
  peak = schedules.scaled_learning_rate(opt.base_learning_rate, config.batch_size)
  return lambda step: schedules.warmup_cosine(
      step, base_value=peak, total_steps=config.total_steps, warmup_steps=opt.warmup_steps
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


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The optimizer for `config`, with `optimizer.lr_multipliers` {top-level module: factor}.

  A multiplier scales that module's learning rate at every step (BraVe's predictor x10);
  modules not named use the schedule as is.
  """
  opt = config.optimizer
  schedule = learning_rate_schedule(config)
  multipliers = dict(opt.get("lr_multipliers", {}) or {})
  if not multipliers:
    tx = _base_optimizer(opt, schedule)
  else:
    transforms = {"default": _base_optimizer(opt, schedule)}
    for name, factor in multipliers.items():
      transforms[name] = _base_optimizer(opt, lambda step, f=factor: f * schedule(step))
    label = lambda params: {k: jax.tree.map(lambda _, k=k: k if k in multipliers else "default", v) for k, v in params.items()}
    tx = optax.multi_transform(transforms, label)
  if opt.get("grad_clip_norm"):
    tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
  if freezes_patch_embedding(config):
    tx = optax.chain(tx, optax.masked(optax.set_to_zero(), frozen_mask))
  return tx
