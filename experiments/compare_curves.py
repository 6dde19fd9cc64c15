"""Plot training curves of several runs side by side, from their workdirs' metrics.jsonl.

  python experiments/compare_curves.py --run="default=/tmp/swav_scenes" \
      --run="no local crops=/tmp/swav_scenes_nolocal" --metrics=embedding_std,swav_loss \
      --out=docs/swav_scenes_collapse.png

One panel per metric, one line per run; steps without the metric are skipped. `knn_top1` reads
the kNN accuracies of eval/knn_history.json (those measured during training, and the final one).
"""

import json
from pathlib import Path

from absl import app
from absl import flags

_RUNS = flags.DEFINE_multi_string("run", [], "LABEL=WORKDIR, once per run.")
_METRICS = flags.DEFINE_list("metrics", ["loss"], "Metric names, one panel each.")
_OUT = flags.DEFINE_string("out", "curves.png", "Where to write the figure.")
_TITLE = flags.DEFINE_string("title", "", "Figure title.")


def read_curve(workdir: Path, metric: str) -> tuple[list[int], list[float]]:
  """(steps, values) of one metric in a workdir's metrics.jsonl (or knn_history.json), in logged order."""
  if metric == "knn_top1":
    history = json.loads((workdir / "eval" / "knn_history.json").read_text())
    return [int(r["step"]) for r in history], [float(r["knn_top1"]) for r in history]
  path = workdir / "metrics.jsonl"
  if not path.exists():
    raise FileNotFoundError(f"{path} does not exist; pass the workdir of a finished or running jaxssl.main run.")
  steps, values = [], []
  for line in path.read_text().splitlines():
    record = json.loads(line)
    if metric in record and "step" in record:
      steps.append(int(record["step"]))
      values.append(float(record[metric]))
  return steps, values


def parse_run(spec: str) -> tuple[str, Path]:
  label, sep, workdir = spec.partition("=")
  if not sep or not label or not workdir:
    raise app.UsageError(f"--run={spec!r} is not LABEL=WORKDIR; e.g. --run='default=/tmp/run1'.")
  return label, Path(workdir)


def main(argv):
  del argv
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  runs = [parse_run(spec) for spec in _RUNS.value]
  if not runs:
    raise app.UsageError("Give at least one --run=LABEL=WORKDIR.")
  metrics = _METRICS.value
  figure, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.4), squeeze=False)
  for axis, metric in zip(axes[0], metrics):
    for label, workdir in runs:
      steps, values = read_curve(workdir, metric)
      axis.plot(steps, values, label=label, marker="o" if len(steps) < 20 else None)
    axis.set_xlabel("step")
    axis.set_title(metric)
    axis.grid(alpha=0.3)
  axes[0][0].legend()
  if _TITLE.value:
    figure.suptitle(_TITLE.value)
  figure.tight_layout()
  Path(_OUT.value).parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(_OUT.value, dpi=110)
  print(f"Wrote {_OUT.value}")


if __name__ == "__main__":
  app.run(main)
