"""Orbax checkpoints of the train state and the data iterator, and backbone export.

A checkpoint holds two items: `state` (the TrainState pytree, restored straight into its
shardings) and `data` (the grain iterator's JSON state), so a resumed run sees the same
batches in the same order as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from absl import logging

import jax
import orbax.checkpoint as ocp

from jaxssl.errors import UserError


class DamagedCheckpointError(Exception):
  """A checkpoint's files do not match the checksums written when it was saved."""


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

  # Checksums. Each finished checkpoint gets a manifest (sha256 of every file) beside the
  # checkpoints directory, so that a damaged file is found on restore instead of being loaded.

  def _manifest_path(self, step: int) -> str:
    return os.path.join(self.directory + "_checksums", f"{step}.json")

  def _checksums(self, step: int) -> dict[str, str]:
    root = os.path.join(self.directory, str(step))
    sums = {}
    for dirpath, _, filenames in os.walk(root):
      for name in sorted(filenames):
        path = os.path.join(dirpath, name)
        digest = hashlib.sha256()
        with open(path, "rb") as f:
          for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
        sums[os.path.relpath(path, root)] = digest.hexdigest()
    return sums

  def _write_manifests(self) -> None:
    """Manifests for finished steps that lack one; drops those of deleted steps. Process 0 only."""
    if jax.process_index() != 0:
      return
    os.makedirs(self.directory + "_checksums", exist_ok=True)
    steps = set(self._manager.all_steps())
    for step in steps:
      if os.path.isdir(os.path.join(self.directory, str(step))) and not os.path.exists(self._manifest_path(step)):
        with open(self._manifest_path(step), "w") as f:
          json.dump(self._checksums(step), f, indent=0, sort_keys=True)
    for name in os.listdir(self.directory + "_checksums"):
      if name.removesuffix(".json").isdigit() and int(name.removesuffix(".json")) not in steps:
        os.remove(os.path.join(self.directory + "_checksums", name))

  def verify(self, step: int) -> None:
    """Raises DamagedCheckpointError if `step`'s files differ from its manifest (none: not checked)."""
    path = self._manifest_path(step)
    if not os.path.exists(path):
      return
    with open(path) as f:
      expected = json.load(f)
    found = self._checksums(step)
    damaged = sorted(name for name in set(expected) | set(found) if expected.get(name) != found.get(name))
    if damaged:
      raise DamagedCheckpointError(f"{len(damaged)} file(s) missing or changed, e.g. {damaged[0]}")

  def restore_newest_good(self, abstract_state: Any) -> tuple[int, Any, dict]:
    """Restores the newest checkpoint that verifies and loads, warning about each damaged one."""
    damaged = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        self.verify(step)
        state, data_state = self.restore(abstract_state, step)
      except Exception as e:  # pylint: disable=broad-except  (orbax raises many kinds)
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        message = f"The checkpoint at step {step} in {self.directory} is damaged ({reason}); falling back to the one before it."
        logging.warning(message)
        print(f"WARNING: {message}", flush=True)
        damaged.append(step)
        continue
      for bad in damaged:  # the resumed run will write these steps again
        self._manager.delete(bad)
      return step, state, data_state
    raise UserError(
        f"Every checkpoint in {self.directory} is damaged (steps {damaged}); delete that directory to "
        "start the run over, or restore it from a backup."
    )

  def save(self, step: int, state: Any, data_state: dict) -> None:
    """Saves asynchronously; call `wait` before reading the files or exiting."""
    self.wait()  # orbax would wait for the previous save anyway; its manifest is written here
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
    """Waits for the save in flight, raises CheckpointSaveError if it failed, writes manifests."""
    try:
      self._manager.wait_until_finished()
      self._manager.check_for_errors()
    except Exception as e:
      raise self._save_failed(e) from e
    self._write_manifests()

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
