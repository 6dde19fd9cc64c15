"""Tiny configs shared by the tests: models of width 4-8 on 16 px images, so compiles are short."""

from __future__ import annotations

import sys
import pathlib

import jax
import ml_collections
import numpy as np

_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
  sys.path.insert(0, str(_ROOT))

from configs import byol as byol_config  # noqa: E402


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """Sets dotted keys ('model.projection_dim': 8) on `config`, in place."""
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def tiny_config(config: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
  """`config` shrunk for tests and locked: the built-in digits at 16 px (8 px local crops, if
  any), batch 16, a width-4 ResNet-18 (small stem), 6 steps, small eval sets; then `overrides`."""
  c = config
  c.data.name = "builtin:digits"
  c.data.image_size = 16
  for view in c.augment.views:
    view.size = 16
  if c.augment.get("local_views") and c.augment.local_views.get("num"):
    c.augment.local_views.size = 8
    c.augment.local_views.num = 2
  c.batch_size = 16
  c.total_steps = 6
  c.log_every = 2
  c.checkpoint_every = 3
  c.optimizer.warmup_steps = 0  # a first step with lr > 0
  c.model.width_multiplier = 0.0625  # 4 channels in the first stage
  c.model.stem = "small"
  c.eval.knn_every = 0
  c.eval.max_train_examples = 256
  c.eval.max_test_examples = 64
  c.eval.batch_size = 64
  apply_overrides(c, overrides)
  c.lock()
  return c


def tiny_byol_config(**overrides) -> ml_collections.ConfigDict:
  """BYOL on the built-in digits at 16 px with a width-4 ResNet-18 and 16-d heads."""
  heads = {"model.projector_hidden_dim": 16, "model.projection_dim": 8, "model.predictor_hidden_dim": 16}
  return tiny_config(byol_config.get_config(), **{"optimizer.warmup_steps": 2, **heads, **overrides})


def tiny_swav_config(**overrides) -> ml_collections.ConfigDict:
  from configs import swav  # noqa: PLC0415

  defaults = {"model.projector_hidden_dim": 16, "model.projection_dim": 8, "swav.num_prototypes": 12, "optimizer.frozen_steps.prototypes": 0}
  return tiny_config(swav.get_config(), **{**defaults, **overrides})


def tiny_dino_config(**overrides) -> ml_collections.ConfigDict:
  from configs import dino  # noqa: PLC0415

  # The CPU default's Sinkhorn teacher and BN head, with the paper's temperature warm-up (0.04 -> 0.07).
  defaults = {
      "dino.hidden_dim": 16, "dino.bottleneck_dim": 8, "dino.out_dim": 12, "optimizer.frozen_steps.last_layer": 0,
      "dino.teacher_temperature_warmup_steps": 4, "dino.warmup_teacher_temperature": 0.04, "dino.teacher_temperature": 0.07,
  }
  return tiny_config(dino.get_config(), **{**defaults, **overrides})


def assert_trees_close(a, b, tolerance: float) -> None:
  """Every leaf of `a` and `b` agrees to `tolerance` relative to the leaf's scale (at least 1)."""

  def check(path, x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    scale = max(1.0, float(np.abs(x).max()))
    assert np.abs(x - y).max() <= tolerance * scale, (path, np.abs(x - y).max(), scale)

  jax.tree_util.tree_map_with_path(check, a, b)
