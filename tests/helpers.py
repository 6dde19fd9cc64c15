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
