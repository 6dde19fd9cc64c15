"""Weighted k-nearest-neighbour classification on cosine similarity (Wu et al. 2018).

Each of the k nearest training features votes for its label with weight exp(s / T), where s is
the cosine similarity; the class with the largest total wins. NPID uses k=200, T=0.07.
"""

from __future__ import annotations

import numpy as np


def _normalize(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def knn_predict(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    *,
    k: int = 200,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> np.ndarray:
  """Predicted labels [N_test] by similarity-weighted voting of the k nearest neighbours."""
  train = _normalize(train_features)
  test = _normalize(test_features)
  train_labels = np.asarray(train_labels, np.int64)
  num_classes = int(num_classes or train_labels.max() + 1)
  k = min(k, len(train))
  predictions = []
  for start in range(0, len(test), chunk_size):
    similarity = test[start : start + chunk_size] @ train.T
    neighbours = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    weights = np.exp(np.take_along_axis(similarity, neighbours, axis=1) / temperature)
    votes = np.zeros((len(similarity), num_classes), np.float64)
    np.add.at(votes, (np.arange(len(similarity))[:, None], train_labels[neighbours]), weights)
    predictions.append(np.argmax(votes, axis=1))
  return np.concatenate(predictions)


def knn_top1(train_features, train_labels, test_features, test_labels, **kwargs) -> float:
  """Top-1 accuracy (in %, 0-100) of `knn_predict`."""
  predicted = knn_predict(train_features, train_labels, test_features, **kwargs)
  return float(100.0 * np.mean(predicted == np.asarray(test_labels)))
