"""PNG plots written to WORKDIR/plots: loss curve, kNN accuracy during training, view pairs."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")  # files only; never needs a display
  import matplotlib.pyplot as plt

  return plt


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
  if len(values) < window or window < 2:
    return values
  return np.convolve(values, np.ones(window) / window, mode="valid")


def plot_curves(path: str, records: Sequence[dict], keys: Sequence[str], title: str) -> str | None:
  """Line plot of `keys` against 'step' over `records` (dicts); raw values faint, smoothed bold."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.4), squeeze=False)
  plotted = False
  for ax, key in zip(axes[0], keys):
    points = [(r["step"], r[key]) for r in records if key in r and np.isfinite(r[key])]
    if not points:
      ax.set_visible(False)
      continue
    steps, values = map(np.asarray, zip(*points))
    ax.plot(steps, values, alpha=0.3, color="tab:blue")
    window = max(1, len(values) // 25)
    smoothed = _smooth(values, window)
    ax.plot(steps[len(steps) - len(smoothed):], smoothed, color="tab:blue")
    ax.set_xlabel("step")
    ax.set_title(key)
    ax.grid(alpha=0.3)
    plotted = True
  fig.suptitle(title)
  fig.tight_layout()
  if plotted:
    fig.savefig(path, dpi=110)
  plt.close(fig)
  return path if plotted else None


def plot_knn(path: str, history: Sequence[dict], baselines: dict[str, float]) -> str | None:
  """kNN top-1 over training steps, with horizontal lines for the baselines."""
  if not history:
    return None
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  ax.plot([h["step"] for h in history], [h["knn_top1"] for h in history], "o-", label="trained encoder")
  styles = iter(["--", ":", "-."])
  for name, value in baselines.items():
    ax.axhline(value, linestyle=next(styles, "--"), color="gray", label=name)
  ax.set_xlabel("step")
  ax.set_ylabel("kNN top-1 (%)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_view_pairs(path: str, originals: np.ndarray, views: Sequence[np.ndarray], max_rows: int = 8) -> str:
  """A grid: each row an image, then each of its augmented views (float images in [0, 1])."""
  plt = _pyplot()
  rows = min(max_rows, len(originals))
  columns = 1 + len(views)
  fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.6 * rows), squeeze=False)
  for r in range(rows):
    for c, image in enumerate([originals[r]] + [v[r] for v in views]):
      axes[r, c].imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")
      axes[r, c].axis("off")
      if r == 0:
        axes[r, c].set_title("image" if c == 0 else f"view {c}", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def write_all(workdir: str, records, knn_history, baselines, view_grid) -> list[str]:
  """Writes every plot under WORKDIR/plots and returns their paths."""
  directory = os.path.join(workdir, "plots")
  os.makedirs(directory, exist_ok=True)
  loss_keys = [k for k in ("loss", "embedding_std", "probe_top1") if any(k in r for r in records)]
  written = [
      plot_curves(os.path.join(directory, "loss.png"), records, loss_keys, "training"),
      plot_knn(os.path.join(directory, "knn.png"), knn_history, baselines),
  ]
  if view_grid is not None:
    written.append(plot_view_pairs(os.path.join(directory, "views.png"), *view_grid))
  return [p for p in written if p]
