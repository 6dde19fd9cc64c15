"""Orbax checkpoints of the train state and the data iterator, and backbone export.

A checkpoint holds two items: `state` (the TrainState pytree, restored straight into its
shardings) and `data` (the grain iterator's JSON state), so a resumed run sees the same
batches in the same order as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores (train state, data iterator state) under `directory`."""

  def __init__(self, directory: str, *, max_to_keep: int = 2):
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        item_names=("state", "data"),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_state: dict) -> None:
    """Saves asynchronously; call `wait` before reading the files or exiting."""
    self._manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)),
        force=True,
    )

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores the newest (or the given) step into the shardings of `abstract_state`."""
    step = self.latest_step() if step is None else step
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()),
    )
    return restored["state"], restored["data"]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


def abstract_like(tree: Any, shardings: Any) -> Any:
  """Shape/dtype/sharding placeholders for restoring `tree`; `shardings` mirrors `tree`."""
  return jax.tree.map(lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree, shardings)


def export_backbone(directory: str, params: Any, batch_stats: Any, config_json: str) -> str:
  """Writes a pretrained backbone for fine-tuning: its params, BN statistics and the config.

  Load it with `load_backbone(directory)` and merge into a model built by
  `jaxssl.models.make_backbone(config.model, ...)`.
  """
  directory = os.path.abspath(directory)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(directory, "variables"), {"params": params, "batch_stats": batch_stats}, force=True)
  checkpointer.wait_until_finished()
  if jax.process_index() == 0:
    with open(os.path.join(directory, "config.json"), "w") as f:
      f.write(config_json)
  return directory


def load_backbone(directory: str) -> tuple[dict, dict, dict]:
  """Returns (params, batch_stats, config dict) written by `export_backbone`."""
  directory = os.path.abspath(directory)
  variables = ocp.StandardCheckpointer().restore(os.path.join(directory, "variables"))
  with open(os.path.join(directory, "config.json")) as f:
    config = json.load(f)
  return variables["params"], variables["batch_stats"], config
