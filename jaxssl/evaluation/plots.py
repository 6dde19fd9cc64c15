"""PNG plots written to WORKDIR/plots: loss curve, kNN accuracy during training, view pairs, and
what the trained features do: a 2-D map of the test set and nearest-neighbour retrievals."""

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


def evenly_spaced(count: int, wanted: int) -> np.ndarray:
  return np.unique(np.linspace(0, count - 1, min(count, wanted)).round().astype(int))


def _as_picture(example: np.ndarray) -> np.ndarray:
  """An image [H, W, 3] in [0, 1] from a uint8 image, or the middle frame of a clip [T, H, W, 3]."""
  if example.ndim == 4:
    example = example[len(example) // 2]
  return example.astype(np.float32) / 255.0 if example.dtype == np.uint8 else np.clip(example, 0.0, 1.0)


def plot_embedding_map(path: str, features: np.ndarray, labels: np.ndarray, max_points: int = 1000, seed: int = 0) -> str | None:
  """t-SNE of (up to `max_points` evenly spaced) L2-normalised features, coloured by label: do
  the classes form clusters the encoder was never told about?"""
  from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top

  index = evenly_spaced(len(features), max_points)
  if len(index) < 10:
    return None
  x = features[index] / np.maximum(np.linalg.norm(features[index], axis=1, keepdims=True), 1e-12)
  points = TSNE(n_components=2, perplexity=min(30.0, (len(index) - 1) / 3), init="pca", random_state=seed).fit_transform(x)
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5.2, 4.6))
  classes = np.unique(labels[index])
  colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
  for i, label in enumerate(classes):
    chosen = labels[index] == label
    ax.scatter(points[chosen, 0], points[chosen, 1], s=6, color=colours(i % colours.N), label=str(label))
  if len(classes) <= 20:
    ax.legend(fontsize=6, markerscale=2, loc="best", title="label", title_fontsize=7)
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(f"t-SNE of the trained features ({len(index)} test examples)", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_retrievals(path: str, queries: dict, gallery: dict, query_features: np.ndarray, gallery_features: np.ndarray,
                    num_queries: int = 8, neighbours: int = 6) -> str:
  """Each row a test example, then its nearest training examples by cosine similarity, framed
  green where the label matches and red where it does not. `queries` / `gallery` hold the
  images (or clips) under 'image' / 'clip' and 'label'."""
  key = "clip" if "clip" in queries else "image"
  normalise = lambda f: f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
  rows = evenly_spaced(len(query_features), num_queries)
  similarity = normalise(query_features[rows]) @ normalise(gallery_features).T
  nearest = np.argsort(-similarity, axis=1)[:, :neighbours]
  plt = _pyplot()
  fig, axes = plt.subplots(len(rows), 1 + neighbours, figsize=(1.3 * (1 + neighbours), 1.3 * len(rows)), squeeze=False)
  for r, (query, found) in enumerate(zip(rows, nearest)):
    pictures = [(queries[key][query], "black")] + [
        (gallery[key][g], "green" if gallery["label"][g] == queries["label"][query] else "red") for g in found
    ]
    for c, (example, colour) in enumerate(pictures):
      ax = axes[r, c]
      ax.imshow(_as_picture(example), interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      for spine in ax.spines.values():
        spine.set_color(colour)
        spine.set_linewidth(2.5 if c else 1.0)
      if r == 0:
        ax.set_title("query" if c == 0 else f"#{c}", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_columns(path: str, columns: dict[str, np.ndarray]) -> str:
  """A grid with one titled column per entry of `columns` (images [N, H, W, 3] in [0, 1])."""
  plt = _pyplot()
  names = list(columns)
  rows = len(columns[names[0]])
  fig, axes = plt.subplots(rows, len(names), figsize=(1.6 * len(names), 1.6 * rows), squeeze=False)
  for c, name in enumerate(names):
    for r in range(rows):
      axes[r, c].imshow(np.clip(columns[name][r], 0.0, 1.0), interpolation="nearest")
      axes[r, c].axis("off")
    axes[0, c].set_title(name, fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_class_attention(path: str, images: np.ndarray, maps: np.ndarray) -> str:
  """Each row an image, then the class token's attention to its patches in each head of the
  last block (DINO's figure 1), each map scaled to its own maximum."""
  plt = _pyplot()
  rows, heads = maps.shape[:2]
  fig, axes = plt.subplots(rows, 1 + heads, figsize=(1.3 * (1 + heads), 1.3 * rows), squeeze=False)
  for r in range(rows):
    axes[r, 0].imshow(_as_picture(images[r]), interpolation="nearest")
    for h in range(heads):
      axes[r, 1 + h].imshow(maps[r, h] / max(float(maps[r, h].max()), 1e-12), cmap="inferno", interpolation="nearest")
      if r == 0:
        axes[r, 1 + h].set_title(f"head {h}", fontsize=8)
    for ax in axes[r]:
      ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def write_feature_plots(workdir: str, evaluator, train_features: np.ndarray, test_features: np.ndarray) -> list[str]:
  """The embedding map and the retrieval grid of the trained encoder's features."""
  directory = os.path.join(workdir, "plots")
  os.makedirs(directory, exist_ok=True)
  written = [
      plot_embedding_map(os.path.join(directory, "embedding_map.png"), test_features, evaluator.test["label"]),
      plot_retrievals(os.path.join(directory, "retrievals.png"), evaluator.test, evaluator.train, test_features, train_features),
  ]
  return [p for p in written if p]


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
