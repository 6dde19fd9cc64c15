"""metrics.jsonl and TensorBoard across a resume: nothing kept in memory, nothing written twice."""

import json

from jaxssl import logs


class _RecordingWriter:
  def __init__(self):
    self.steps = []

  def write_scalars(self, step, values):
    del values
    self.steps.append(step)

  def flush(self):
    pass

  def close(self):
    pass


def _steps_in(path):
  with open(path) as f:
    return [json.loads(line)["step"] for line in f]


def test_resume_cuts_the_file_after_the_checkpoint_and_skips_steps_tensorboard_has(tmp_path):
  first = logs.MetricLog(str(tmp_path), resume_step=0, writer=_RecordingWriter())
  for step in range(1, 11, 2):  # steps 1..10, logged two at a time
    first.write_steps(step, [{"loss": float(step)}, {"loss": float(step + 1)}])
  path = tmp_path / "metrics.jsonl"
  kept = path.read_text().splitlines()[:6]
  assert not hasattr(first, "records")  # the steps live in the file only

  # Preempted after step 10 with the last checkpoint at step 6: steps 7-10 are redone.
  writer = _RecordingWriter()
  resumed = logs.MetricLog(str(tmp_path), resume_step=6, writer=writer)
  assert path.read_text().splitlines() == kept
  for step in range(7, 13, 2):
    resumed.write_steps(step, [{"loss": float(step)}, {"loss": float(step + 1)}])
  resumed.write_scalars(10, {"knn_top1": 1.0})
  resumed.write_scalars(12, {"knn_top1": 2.0})
  assert _steps_in(path) == list(range(1, 13))
  assert writer.steps == [12, 12]  # steps 8 and 10 reached TensorBoard before the preemption


def test_read_records_thins_long_logs_and_keeps_the_last_step(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(json.dumps({"step": s, "loss": 0.0}) + "\n" for s in range(1, 1001)))
  records = logs.read_records(str(path), max_records=100)
  steps = [r["step"] for r in records]
  assert len(steps) <= 101 and steps[0] == 1 and steps[-1] == 1000
  assert steps == sorted(steps)
  assert logs.read_records(str(path), max_records=5000) == [{"step": s, "loss": 0.0} for s in range(1, 1001)]
