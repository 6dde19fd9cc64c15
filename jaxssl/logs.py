"""What a run writes as it goes: metrics.jsonl, TensorBoard scalars, the progress line, JSON files."""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np


class MetricLog:
  """Writes one JSON line per step to metrics.jsonl, and interval means to clu writers.

  Nothing is kept in memory (a 300k-step run would hold hundreds of MB): the plots read the file
  back at the end, thinned (`read_records`). On resume the file is cut after the checkpoint's step
  in place, not rewritten, and TensorBoard is not sent again the steps it already has: a resumed
  run recomputes them bit for bit, so they would only appear twice.
  """

  def __init__(self, workdir: str, resume_step: int, writer=None):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._is_writer = jax.process_index() == 0
    self._logged_until = -1
    if self._is_writer and os.path.exists(self.path):
      self._logged_until = _truncate_after_step(self.path, resume_step)
    if writer is None:
      from clu import metric_writers  # imports TensorFlow; kept out of module import time

      writer = metric_writers.create_default_writer(workdir, just_logging=not self._is_writer, asynchronous=False)
    self.writer = writer

  def write_steps(self, first_step: int, per_step: list[dict]) -> dict:
    """Logs the metrics of consecutive steps; returns their mean."""
    lines = [{"step": first_step + i, **{k: float(v) for k, v in m.items()}} for i, m in enumerate(per_step)]
    if self._is_writer:
      with open(self.path, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in lines)
    mean = {k: float(np.mean([line[k] for line in lines])) for k in lines[0] if k != "step"}
    self.write_scalars(lines[-1]["step"], mean)
    return mean

  def write_scalars(self, step: int, values: dict) -> None:
    """To TensorBoard, unless it has this step from before the resume."""
    if step > self._logged_until:
      self.writer.write_scalars(step, values)

  def read_records(self, max_records: int = 20_000) -> list[dict]:
    """The logged steps, every k-th one when there are more than `max_records` (for plots)."""
    return read_records(self.path, max_records)

  def close(self):
    self.writer.flush()
    self.writer.close()


def _truncate_after_step(path: str, step: int) -> int:
  """Cuts metrics.jsonl after the last line of `step` or earlier (a resumed run redoes the rest);
  returns the last step the file held before, -1 if none."""
  keep_bytes, last_step = 0, -1
  with open(path, "rb") as f:
    for line in f:
      if not line.strip():
        continue
      line_step = json.loads(line).get("step", 0)
      last_step = max(last_step, line_step)
      if line_step <= step:
        keep_bytes = f.tell()
  with open(path, "r+b") as f:
    f.truncate(keep_bytes)
  return last_step


def read_records(path: str, max_records: int = 20_000) -> list[dict]:
  """Every k-th record of a metrics.jsonl (k so that at most `max_records` remain, the last kept)."""
  if not os.path.exists(path):
    return []
  with open(path) as f:
    count = sum(1 for line in f if line.strip())
  stride = max(1, -(-count // max_records))
  records = []
  with open(path) as f:
    for i, line in enumerate(l for l in f if l.strip()):
      if i % stride == 0 or i == count - 1:
        records.append(json.loads(line))
  return records


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
