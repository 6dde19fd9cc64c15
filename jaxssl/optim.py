"""Optimizers from config: LARS / AdamW / SGD with weight-decay masks and per-module lr scales."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxssl import schedules
from jaxssl.models.vit import PATCH_EMBEDDING

OPTIMIZERS = ("lars", "adamw", "sgd")


# Top-level parameter groups that are evaluation devices, not part of the representation.
PROBE_KEYS = ("probe",)
# The online probe's own SGD learning rate (momentum 0.9, no weight decay). Its inputs have unit
# norm on average (`methods.common.linear_probe_loss`), so one rate suits every method; tied to
# the method's rate instead, the probe diverged at high rates and barely moved at low ones.
PROBE_LEARNING_RATE = 0.5


def decay_mask(params: Any) -> Any:
  """True for weight matrices and conv kernels, False for biases and norm scales/offsets.

  BYOL/SimCLR exclude biases and BatchNorm parameters (all 1-D) from weight decay and from
  LARS' trust ratio. `optax.lars` applies both to everything unless given this mask.
  """
  return jax.tree.map(lambda p: p.ndim > 1, params)


def freezes_patch_embedding(config: ml_collections.ConfigDict) -> bool:
  """Whether the config asks for MoCo v3's frozen random patch projection of a ViT."""
  vit_options = config.model.get("vit", None) or {}
  backbone = str(config.model.get("backbone", "") or "")  # multi-backbone methods (BraVe) have none
  return backbone.startswith("vit") and bool(vit_options.get("freeze_patch_embedding", False))


def frozen_mask(params: Any) -> Any:
  """True for the ViT patch projection's parameters (any top-level module), else False.

  The model already stops their gradient; the optimizer must not move them either, and AdamW's
  decoupled weight decay would, so `make_optimizer` zeroes their updates.
  """

  def frozen(path, _):
    return PATCH_EMBEDDING in [getattr(entry, "key", None) for entry in path]

  return jax.tree_util.tree_map_with_path(frozen, params)


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
        learning_rate, b1=opt.get("adam_b1", 0.9), weight_decay=opt.weight_decay,
        mask=decay_mask if opt.exclude_bias_and_norm else None,
    )
  if opt.name == "sgd":
    return optax.chain(
        optax.add_decayed_weights(opt.weight_decay, mask=decay_mask if opt.exclude_bias_and_norm else None),
        optax.sgd(learning_rate, momentum=opt.momentum, nesterov=bool(opt.get("nesterov", False))),
    )
  raise ValueError(f"config.optimizer.name '{opt.name}' is not known; choose one of {OPTIMIZERS}.")


class FrozenState(NamedTuple):
  count: jax.Array  # updates seen, frozen ones included
  inner: Any  # the wrapped optimizer's state, untouched while frozen


def frozen_for_first_steps(
    make_optimizer: Callable[[Callable], optax.GradientTransformation], schedule: Callable, steps: int
) -> optax.GradientTransformation:
  """An optimizer that leaves its parameters untouched for the first `steps` updates.

  As PyTorch does for a parameter whose gradient is None (SwAV's prototypes and DINO's last layer
  in the first epoch): no update, no weight decay, no momentum or Adam statistics. The wrapped
  optimizer starts afresh at step `steps`, with the learning rate the schedule gives there.
  """
  inner = make_optimizer(lambda count: schedule(count + steps))

  def init(params):
    return FrozenState(count=jnp.zeros([], jnp.int32), inner=inner.init(params))

  def update(updates, state, params=None):
    new_updates, new_inner = inner.update(updates, state.inner, params)
    frozen = state.count < steps
    keep_old = lambda old, new: jnp.where(frozen, old, new).astype(new.dtype)
    new_updates = jax.tree.map(lambda u: jnp.where(frozen, jnp.zeros_like(u), u), new_updates)
    new_inner = jax.tree.map(keep_old, state.inner, new_inner)
    return new_updates, FrozenState(count=optax.safe_increment(state.count), inner=new_inner)

  return optax.GradientTransformation(init, update)


def clip_each_by_norm(max_norm: float) -> optax.GradientTransformation:
  """Scales each gradient tensor separately to norm <= max_norm (DINO's `clip_gradients`)."""

  def clip(updates, state, params=None):
    del params
    def one(g):
      norm = jnp.sqrt(jnp.sum(jnp.square(g)))
      return g * jnp.minimum(1.0, max_norm / (norm + 1e-6)).astype(g.dtype)
    return jax.tree.map(one, updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), clip)


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
  """The optimizer for `config`; modules in `module_learning_rates` get their own schedule and
  the online probe its own constant rate (`PROBE_LEARNING_RATE`).

  Modules not named there use the default warm-up + cosine schedule. `optimizer.frozen_steps`
  {module: steps} leaves a module untouched for its first steps (SwAV's prototypes, DINO's last
  layer; see `frozen_for_first_steps`).
  """
  opt = config.optimizer
  special = module_learning_rates(config)
  frozen = {name: int(steps) for name, steps in dict(opt.get("frozen_steps", {}) or {}).items() if steps}
  groups = set(special) | set(frozen) | set(PROBE_KEYS)

  def module_optimizer(name):
    if name in PROBE_KEYS:
      return optax.sgd(PROBE_LEARNING_RATE, momentum=0.9)
    schedule = special.get(name, learning_rate_schedule(config))
    make = lambda learning_rate: _base_optimizer(opt, learning_rate)
    return frozen_for_first_steps(make, schedule, frozen[name]) if name in frozen else make(schedule)

  transforms = {"default": _base_optimizer(opt, learning_rate_schedule(config))}
  transforms.update({name: module_optimizer(name) for name in groups})
  label = lambda params: {k: jax.tree.map(lambda _, k=k: k if k in groups else "default", v) for k, v in params.items()}
  tx = optax.multi_transform(transforms, label)
  if opt.get("grad_clip_norm"):
    clip = clip_each_by_norm if opt.get("grad_clip_per_tensor") else optax.clip_by_global_norm
    tx = optax.chain(clip(opt.grad_clip_norm), tx)
  if freezes_patch_embedding(config):
    tx = optax.chain(tx, optax.masked(optax.set_to_zero(), frozen_mask))
  return tx


MAIN_PLAYER = "main"


def module_owners(players: dict) -> dict[str, str]:
  """Top-level module -> the player that owns it, for the modules of `players` (see
  `jaxssl.methods.base.Player`); a module claimed twice, or a player called 'main', is an error."""
  owners = {}
  for name, player in players.items():
    if name == MAIN_PLAYER:
      raise ValueError(f"A player may not be called '{MAIN_PLAYER}': that name is the encoder's (every unclaimed module).")
    for module in player.modules:
      if module in owners:
        raise ValueError(f"Module '{module}' is claimed by players '{owners[module]}' and '{name}'; give it to one.")
      owners[module] = name
  return owners


def with_players(main: optax.GradientTransformation, players: dict) -> optax.GradientTransformation:
  """The run's optimizer for the main player's modules and each player's own for its modules.

  Without players this is `main` itself, so the optimizer state of a one-player method keeps its
  structure (and its checkpoints stay loadable).
  """
  if not players:
    return main
  owners = module_owners(players)
  transforms = {MAIN_PLAYER: main}
  transforms.update({name: player.optimizer or main for name, player in players.items()})
  label = lambda params: {k: jax.tree.map(lambda _, k=k: owners.get(k, MAIN_PLAYER), v) for k, v in params.items()}
  return optax.multi_transform(transforms, label)
