"""kNN, linear probe and the collapse monitor on small hand-made data."""

import math

import numpy as np

from jaxssl.evaluation import agreement, knn, linear, monitors


def test_weighted_knn_votes_by_similarity():
  train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
  labels = np.array([0, 0, 1])
  test = np.array([[1.0, 0.05], [0.05, 1.0]])
  assert knn.knn_predict(train, labels, test, k=3, temperature=0.07).tolist() == [0, 1]


def test_weighted_knn_weight_beats_count():
  # Two far neighbours of class 1 lose to one very close neighbour of class 0 at low temperature:
  # exp(1/0.1) > 2 exp(0.6/0.1).
  train = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]])
  labels = np.array([0, 1, 1])
  test = np.array([[1.0, 0.0]])
  assert knn.knn_predict(train, labels, test, k=3, temperature=0.1).tolist() == [0]
  # At a high temperature the weights are nearly equal and the majority wins.
  assert knn.knn_predict(train, labels, test, k=3, temperature=100.0).tolist() == [1]


def test_knn_top1_in_percent_and_chunking():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(3, 8))
  labels = rng.integers(0, 3, size=300)
  features = centres[labels] + 0.1 * rng.normal(size=(300, 8))
  top1 = knn.knn_top1(features[:200], labels[:200], features[200:], labels[200:], k=5, chunk_size=7)
  assert top1 == 100.0


def test_linear_probe_separable_data():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 2, size=200)
  features = np.stack([labels * 2.0 - 1.0, rng.normal(size=200)], axis=1) + 0.1 * rng.normal(size=(200, 2))
  assert linear.linear_probe_top1(features[:150], labels[:150], features[150:], labels[150:]) == 100.0


def test_collapse_monitor():
  dim = 256
  assert monitors.collapse_ratio(1 / math.sqrt(dim), dim) == 1.0
  assert monitors.collapse_warning(1 / math.sqrt(dim), dim, step=10) is None
  warning = monitors.collapse_warning(1e-4, dim, step=10)
  assert warning is not None and "collapsing" in warning and "step 10" in warning


def test_view_agreement_on_hand_made_features():
  # Three images. After removing the batch mean the centred cosines are (rows: view 0)
  #   [[ 0.41   0.514 -0.465]
  #    [ 0.912  0.857 -0.885]
  #    [-0.935 -0.97   0.955]]
  # so only image 2 finds its own view 1 first.
  view0 = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
  view1 = np.array([[0.0, 1.0], [0.1, 1.0], [-1.0, -1.0]])
  labels = np.array([0, 1, 0])
  result = agreement.view_agreement(view0, view1, labels)

  def unit(x):
    x = x - x.mean(0)
    return x / np.linalg.norm(x, axis=1, keepdims=True)

  cosines = unit(view0) @ unit(view1).T
  assert result.view_retrieval == 1 / 3
  np.testing.assert_allclose(result.cosine_same, np.trace(cosines) / 3)
  np.testing.assert_allclose(result.cosine_other, (cosines.sum() - np.trace(cosines)) / 6)
  # Nearest other images: 0 -> 1 (class 1, not 0), 1 -> 0 (class 0, not 1), 2 -> 0 (class 0 = 0).
  assert np.argmax(np.where(np.eye(3, dtype=bool), -np.inf, cosines), axis=1).tolist() == [1, 0, 0]
  assert result.nearest_other_same_class == 1 / 3
