"""End to end on tiny settings: a run writes its outputs, and a stopped-then-resumed run
matches an uninterrupted one step for step."""

import json
import os

import jax
import numpy as np
import pytest

from jaxssl import checkpoint, train
from tests import helpers


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [(r["step"], r["loss"]) for r in map(json.loads, f)]


def _final_params(workdir):
  params, batch_stats, _ = checkpoint.load_backbone(os.path.join(workdir, "export", "backbone"))
  return params, batch_stats


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  summary = train.train_and_evaluate(helpers.tiny_byol_config(), workdir)
  return workdir, summary


def test_run_writes_summary_plots_and_export(uninterrupted):
  workdir, summary = uninterrupted
  with open(os.path.join(workdir, "eval", "summary.json")) as f:
    written = json.load(f)
  assert written == summary
  for key in ("knn_top1", "knn_top1_random_init", "knn_top1_pixels", "linear_top1", "steps", "wall_seconds"):
    assert key in summary, key
  assert summary["steps"] == 6
  for key in ("knn_top1", "knn_top1_random_init", "knn_top1_pixels", "linear_top1"):
    assert 0.0 <= summary[key] <= 100.0
  # Raw pixels of plain digits are easy: far above the 10% of chance.
  assert summary["knn_top1_pixels"] > 50.0
  for name in ("loss.png", "knn.png", "views.png"):
    assert os.path.getsize(os.path.join(workdir, "plots", name)) > 1000, name
  assert [s for s, _ in _losses(workdir)] == [1, 2, 3, 4, 5, 6]
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "6"))


def test_resume_matches_uninterrupted_run(uninterrupted, tmp_path):
  reference, _ = uninterrupted
  workdir = str(tmp_path / "resumed")
  config = helpers.tiny_byol_config()
  assert train.train_and_evaluate(config, workdir, stop_after_steps=3) == {}
  assert not os.path.exists(os.path.join(workdir, "eval", "summary.json"))
  assert [s for s, _ in _losses(workdir)] == [1, 2, 3]
  summary = train.train_and_evaluate(config, workdir)
  assert summary["steps"] == 6
  # Same data order, augmentations and updates: identical per-step losses and final weights.
  np.testing.assert_allclose([l for _, l in _losses(workdir)], [l for _, l in _losses(reference)], rtol=1e-6)
  resumed_params, reference_params = _final_params(workdir), _final_params(reference)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), resumed_params, reference_params)


def test_rerun_of_finished_run_only_evaluates(uninterrupted):
  workdir, summary = uninterrupted
  again = train.train_and_evaluate(helpers.tiny_byol_config(), workdir)
  assert again["steps"] == summary["steps"]
  assert again["knn_top1"] == summary["knn_top1"]
