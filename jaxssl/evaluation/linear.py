"""Linear-probe evaluation: multinomial logistic regression on frozen, standardised features."""

from __future__ import annotations

import warnings

import numpy as np


def linear_probe_top1(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    l2_strength: float = 1e-3,
    max_iterations: int = 500,
) -> float:
  """Top-1 accuracy (%) of an L2-regularised logistic regression fit on the training features."""
  from sklearn.exceptions import ConvergenceWarning
  from sklearn.linear_model import LogisticRegression
  from sklearn.preprocessing import StandardScaler

  scaler = StandardScaler().fit(train_features)
  classifier = LogisticRegression(C=1.0 / (l2_strength * len(train_features)), max_iter=max_iterations)
  with warnings.catch_warnings():
    # A probe that has not fully converged still gives a fair, comparable number.
    warnings.simplefilter("ignore", ConvergenceWarning)
    classifier.fit(scaler.transform(train_features), np.asarray(train_labels))
  predicted = classifier.predict(scaler.transform(test_features))
  return float(100.0 * np.mean(predicted == np.asarray(test_labels)))
