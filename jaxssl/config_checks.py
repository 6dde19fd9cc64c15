"""Checks of the config values that would crash, hang or destroy a run, made before anything
is written: a bad value costs one sentence, not a traceback or a half-made workdir."""

from __future__ import annotations

import ml_collections

from jaxssl import methods, models, optim
from jaxssl.errors import UserError

# Keys that must be positive integers, and what a bad value would do.
_POSITIVE = {
    "total_steps": "the run would have nothing to train",
    "batch_size": "there would be no examples per step",
    "log_every": "the loop divides the step by it",
    "checkpoint_every": "the loop divides the step by it",
    "keep_checkpoints": "every checkpoint, the one a resume needs included, would be deleted",
}


def check_config(config: ml_collections.ConfigDict | None) -> None:
  """Raises UserError naming the first value that cannot work and how to fix it."""
  if config is None:
    raise UserError("--config is required; pass a config file, e.g. --config=configs/brave.py.")
  if "protocol" in config:  # an evaluation protocol (configs/eval/), not a pretraining
    if not config.get("backbone"):
      raise UserError("config.backbone is not set; pass the workdir of a finished run, e.g. --config.backbone=runs/simclr.")
    return
  for key, consequence in _POSITIVE.items():
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise UserError(f"config.{key}={value!r} cannot work ({consequence}); set a positive integer.")
  if config.get("method") not in methods.REGISTRY:
    raise UserError(f"config.method {config.get('method')!r} is not known; choose one of {sorted(methods.REGISTRY)}.")
  backbone = config.get("model", {}).get("backbone")
  if backbone is not None and backbone not in models.BACKBONES:
    raise UserError(f"config.model.backbone {backbone!r} is not known; choose one of {models.BACKBONES}.")
  optimizer = config.get("optimizer", {}).get("name")
  if optimizer is not None and optimizer not in optim.OPTIMIZERS:
    raise UserError(f"config.optimizer.name {optimizer!r} is not known; choose one of {optim.OPTIMIZERS}.")
