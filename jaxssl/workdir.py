"""What a workdir knows about the run it holds: the config it belongs to, and who is using it.

A workdir resumes the run that wrote its checkpoints, so it must refuse two things that would
silently mix runs: a second process training into it at the same time (`exclusive`), and a
resume with a config that computes something else (`check_resumed_config`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from typing import Any

import jax
import ml_collections

from jaxssl.errors import UserError

LOCK_FILE = "run.lock"
CONFIG_FILE = "run_config.json"
CHANGES_FILE = "config_changes.jsonl"
# Settings that change how a run is watched, not what it computes: a resume may change them.
WATCHING_ONLY = ("log_every", "checkpoint_every", "keep_checkpoints", "data.worker_count", "eval.")


@contextlib.contextmanager
def exclusive(workdir: str):
  """Holds an exclusive lock on the workdir for the duration of the run (process 0 only).

  The lock is an flock on `run.lock`, released by the kernel when the process ends however it
  ends, so a killed run never leaves a stale lock behind.
  """
  if jax.process_index() != 0:
    yield
    return
  lock = open(os.path.join(workdir, LOCK_FILE), "a+")
  try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    lock.seek(0)
    holder = lock.read().strip() or "another process"
    lock.close()
    raise UserError(f"The workdir '{workdir}' is in use by {holder}; wait for that run to end, or pass another --workdir.") from None
  lock.seek(0)
  lock.truncate()
  lock.write(f"pid {os.getpid()} on host {socket.gethostname()}")
  lock.flush()
  try:
    yield
  finally:
    fcntl.flock(lock, fcntl.LOCK_UN)
    lock.close()


def flat_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """{'optimizer.name': 'sgd', ...}: every leaf of the config, as JSON values."""
  flat = {}

  def visit(prefix: str, value: Any) -> None:
    if isinstance(value, dict):
      for key, child in value.items():
        visit(f"{prefix}{key}.", child)
    else:
      flat[prefix[:-1]] = value

  visit("", json.loads(config.to_json_best_effort()))
  return flat


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
  """Keys whose value differs (or that one side lacks), except those that only watch the run."""
  missing = object()
  return sorted(
      key for key in set(saved) | set(current)
      if saved.get(key, missing) != current.get(key, missing) and not key.startswith(WATCHING_ONLY)
  )


def check_resumed_config(workdir: str, config: ml_collections.ConfigDict, resuming: bool, allow_change: bool = False) -> None:
  """Records the config of a new run; refuses to resume one under a config that computes
  something else, naming the keys, unless `allow_change` (the change is then recorded)."""
  path = os.path.join(workdir, CONFIG_FILE)
  current = flat_config(config)
  is_writer = jax.process_index() == 0
  if resuming and os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    differing = config_differences(saved, current)
    if differing and not allow_change:
      shown = "; ".join(f"{key}: {saved.get(key, '(unset)')!r} -> {current.get(key, '(unset)')!r}" for key in differing[:6])
      more = f" and {len(differing) - 6} more" if len(differing) > 6 else ""
      raise UserError(
          f"The workdir '{workdir}' holds a run with another config ({shown}{more}); pass another --workdir, "
          f"or --allow_config_change to resume with these values deliberately (recorded in {CHANGES_FILE})."
      )
    if differing and is_writer:
      change = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "changes": {k: [saved.get(k), current.get(k)] for k in differing}}
      with open(os.path.join(workdir, CHANGES_FILE), "a") as f:
        f.write(json.dumps(change) + "\n")
  if is_writer:  # replaced atomically: the other processes of a multi-process run read it too
    with open(path + ".tmp", "w") as f:
      json.dump(current, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)
