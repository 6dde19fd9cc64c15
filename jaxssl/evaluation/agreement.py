"""Agreement of a backbone's features of two augmented views of the same images.

Methods that learn by predicting a target's output for another view (BYOL, SimSiam, DINO, SwAV's
codes, a memory bank's entries) can only start from what the random network's features of two
views already share; contrastive methods are told which views belong together. These numbers
say how much is shared (`experiments/view_agreement.py` prints them for a config's views).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class ViewAgreement(NamedTuple):
  view_retrieval: float  # fraction whose own view 1 is its view 0's nearest view 1 (chance 1/B)
  cosine_same: float  # mean centred cosine of an image's two views
  cosine_other: float  # mean centred cosine of two different images' views
  nearest_other_same_class: float  # fraction whose nearest OTHER image shares its label


def _centred_unit(features: np.ndarray) -> np.ndarray:
  # The batch's common component says nothing about which image is which.
  centred = features - features.mean(0)
  return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)


def view_agreement(features0: np.ndarray, features1: np.ndarray, labels: np.ndarray) -> ViewAgreement:
  """Statistics of features [B, D] of view 0 and view 1 of the same B images (row i: image i)."""
  similarity = _centred_unit(np.asarray(features0, np.float64)) @ _centred_unit(np.asarray(features1, np.float64)).T
  own = np.eye(len(similarity), dtype=bool)
  nearest_other = np.argmax(np.where(own, -np.inf, similarity), axis=1)
  return ViewAgreement(
      view_retrieval=float(np.mean(np.argmax(similarity, axis=1) == np.arange(len(similarity)))),
      cosine_same=float(np.mean(similarity[own])),
      cosine_other=float(np.mean(similarity[~own])),
      nearest_other_same_class=float(np.mean(labels[nearest_other] == labels)),
  )
