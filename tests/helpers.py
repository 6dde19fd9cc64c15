"""Tiny configs shared by the tests: models of width 4-8 on 16 px images, so compiles are short."""

from __future__ import annotations

import sys
import pathlib

import ml_collections

_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
  sys.path.insert(0, str(_ROOT))

from configs import byol as byol_config  # noqa: E402


def tiny_byol_config(**overrides) -> ml_collections.ConfigDict:
  """BYOL on the built-in digits at 16 px with a width-4 ResNet-18 and 16-d heads."""
  c = byol_config.get_config()
  c.data.name = "builtin:digits"
  c.data.image_size = 16
  for view in c.augment.views:
    view.size = 16
  c.batch_size = 16
  c.total_steps = 6
  c.log_every = 2
  c.checkpoint_every = 3
  c.optimizer.warmup_steps = 2
  c.model.width_multiplier = 0.0625  # 4 channels in the first stage
  c.model.stem = "small"
  c.model.projector_hidden_dim = 16
  c.model.projection_dim = 8
  c.model.predictor_hidden_dim = 16
  c.eval.knn_every = 0
  c.eval.max_train_examples = 256
  c.eval.max_test_examples = 64
  c.eval.batch_size = 64
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  c.lock()
  return c


def _tiny_multicrop(config_module, overrides) -> ml_collections.ConfigDict:
  """A multi-crop method on the built-in digits: 2 x 16 px global and 2 x 8 px local crops."""
  c = config_module.get_config()
  c.data.name = "builtin:digits"
  c.data.image_size = 16
  for view in c.augment.views:
    view.size = 16
  c.augment.local_views.size = 8
  c.augment.local_views.num = 2
  c.batch_size = 16
  c.total_steps = 6
  c.log_every = 2
  c.checkpoint_every = 3
  c.optimizer.warmup_steps = 0  # a first step with lr > 0
  c.model.width_multiplier = 0.0625
  c.model.stem = "small"
  c.eval.knn_every = 0
  c.eval.max_train_examples = 256
  c.eval.max_test_examples = 64
  c.eval.batch_size = 64
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  c.lock()
  return c


def tiny_swav_config(**overrides) -> ml_collections.ConfigDict:
  from configs import swav  # noqa: PLC0415

  defaults = {"model.projector_hidden_dim": 16, "model.projection_dim": 8, "swav.num_prototypes": 12, "optimizer.frozen_steps.prototypes": 0}
  return _tiny_multicrop(swav, {**defaults, **overrides})


def tiny_dino_config(**overrides) -> ml_collections.ConfigDict:
  from configs import dino  # noqa: PLC0415

  defaults = {"dino.hidden_dim": 16, "dino.bottleneck_dim": 8, "dino.out_dim": 12, "optimizer.frozen_steps.last_layer": 0, "dino.teacher_temperature_warmup_steps": 4}
  return _tiny_multicrop(dino, {**defaults, **overrides})
