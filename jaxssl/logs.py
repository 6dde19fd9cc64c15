"""What a run writes as it goes: metrics.jsonl, TensorBoard scalars, the progress line, JSON files."""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np


class MetricLog:
  """Writes one JSON line per step to metrics.jsonl, and interval means to clu writers."""

  def __init__(self, workdir: str, resume_step: int):
    from clu import metric_writers  # imports TensorFlow; kept out of module import time

    self.path = os.path.join(workdir, "metrics.jsonl")
    self.records = self._read_until(resume_step)
    self._is_writer = jax.process_index() == 0
    if self._is_writer:
      # Lines past the checkpoint we resume from are re-done by this run; drop them.
      with open(self.path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in self.records)
    self.writer = metric_writers.create_default_writer(workdir, just_logging=not self._is_writer, asynchronous=False)

  def _read_until(self, step: int) -> list[dict]:
    if not os.path.exists(self.path):
      return []
    with open(self.path) as f:
      records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if r.get("step", 0) <= step]

  def write_steps(self, first_step: int, per_step: list[dict]) -> dict:
    """Logs the metrics of consecutive steps; returns their mean."""
    lines = [{"step": first_step + i, **{k: float(v) for k, v in m.items()}} for i, m in enumerate(per_step)]
    self.records.extend(lines)
    if self._is_writer:
      with open(self.path, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in lines)
    mean = {k: float(np.mean([line[k] for line in lines])) for k in lines[0] if k != "step"}
    self.writer.write_scalars(lines[-1]["step"], mean)
    return mean

  def close(self):
    self.writer.flush()
    self.writer.close()


class Progress:
  """Steps/s and ETA for the progress line."""

  def __init__(self, first_step: int, total_steps: int):
    self.total = total_steps
    self.last_step, self.last_time = first_step, time.time()
    self.start_step, self.start_time = first_step, self.last_time

  def line(self, step: int, batch_size: int, mean: dict) -> str:
    now = time.time()
    rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
    overall = (step - self.start_step) / max(now - self.start_time, 1e-9)
    self.last_step, self.last_time = step, now
    eta = (self.total - step) / max(overall, 1e-9)
    shown = " ".join(f"{k}={v:.4g}" for k, v in mean.items() if k in ("loss", "probe_top1", "embedding_std", "learning_rate"))
    return (
        f"step {step}/{self.total} ({100 * step / self.total:.0f}%) {shown} | {rate:.2f} steps/s "
        f"{rate * batch_size:.0f} img/s | ETA {_duration(eta)}"
    )


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def read_json(path: str, default):
  if not os.path.exists(path):
    return default
  with open(path) as f:
    return json.load(f)


def write_json(path: str, value) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(value, f, indent=2)
