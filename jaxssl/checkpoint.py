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

from jaxssl.errors import UserError


class CheckpointSaveError(UserError):
  """A checkpoint could not be written (e.g. the disk is full): the run must stop, not carry on."""


def _directory_megabytes(path: str) -> float:
  total = 0
  for dirpath, _, filenames in os.walk(path):
    total += sum(os.path.getsize(os.path.join(dirpath, name)) for name in filenames if os.path.exists(os.path.join(dirpath, name)))
  return total / 2**20


class Checkpointer:
  """Saves and restores (train state, data iterator state) under `directory`.

  Saves run in the background; a save that fails (a full disk, a vanished directory) is raised
  as `CheckpointSaveError` by the next `save`, `check` or `wait`, so the run stops within a
  logging interval, with the last good checkpoint intact and named.
  """

  def __init__(self, directory: str, *, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        item_names=("state", "data"),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, data_state: dict) -> None:
    """Saves asynchronously; call `wait` before reading the files or exiting."""
    self.check()
    try:
      self._manager.save(
          step,
          args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)),
          force=True,
      )
    except Exception as e:  # orbax wraps what the filesystem raised
      raise self._save_failed(e) from e

  def check(self) -> None:
    """Raises CheckpointSaveError if a background save has failed."""
    try:
      self._manager.check_for_errors()
    except Exception as e:
      raise self._save_failed(e) from e

  def _save_failed(self, error: Exception) -> CheckpointSaveError:
    text = str(error).strip()
    reason = (getattr(error, "strerror", None) or (text.splitlines()[0] if text else type(error).__name__))[:200]
    try:
      self._manager.wait_until_finished()  # an earlier save still in flight may yet complete
    except Exception:  # pylint: disable=broad-except
      pass  # it failed too: the steps listed below are the ones on disk
    self._manager.reload()  # forget the half-written step
    good = self._manager.all_steps()
    if good:
      last = max(good)
      size = _directory_megabytes(os.path.join(self.directory, str(last)))
      where = f"free space there (a checkpoint takes about {size:.1f} MB) and re-run the same command to resume from step {last}, the last good checkpoint"
    else:
      where = "free space there and re-run the same command (no checkpoint had been saved yet)"
    return CheckpointSaveError(f"Saving a checkpoint in {self.directory} failed ({reason}); {where}.")

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores the newest (or the given) step into the shardings of `abstract_state`."""
    step = self.latest_step() if step is None else step
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()),
    )
    return restored["state"], restored["data"]

  def wait(self) -> None:
    try:
      self._manager.wait_until_finished()
    except Exception as e:
      raise self._save_failed(e) from e

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
