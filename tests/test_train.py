"""End to end on tiny settings: a run writes its outputs, and a stopped-then-resumed run
matches an uninterrupted one step for step."""

import json
import os

import jax
import numpy as np
import pytest

from jaxssl import checkpoint, train
from jaxssl import workdir as workdir_lib
from jaxssl.errors import UserError
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
  for name in ("loss.png", "knn.png", "views.png", "embedding_map.png", "retrievals.png"):
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


def test_resume_under_another_config_is_refused_naming_the_keys(uninterrupted):
  workdir, _ = uninterrupted
  changed = helpers.tiny_byol_config(seed=7, batch_size=32)
  with pytest.raises(UserError, match=r"batch_size: 16 -> 32; seed: 0 -> 7.*--allow_config_change"):
    train.train_and_evaluate(changed, workdir)


def test_a_second_run_on_a_busy_workdir_fails_at_once_naming_the_first(uninterrupted):
  workdir, _ = uninterrupted
  with workdir_lib.exclusive(workdir):
    with pytest.raises(UserError, match=f"in use by pid {os.getpid()} on host "):
      train.train_and_evaluate(helpers.tiny_byol_config(), workdir)


def test_config_change_allowed_on_purpose_is_recorded(tmp_path):
  workdir = str(tmp_path)
  config = helpers.tiny_byol_config()
  workdir_lib.check_resumed_config(workdir, config, resuming=False)
  watched = helpers.tiny_byol_config(log_every=1, **{"eval.knn_k": 3})
  workdir_lib.check_resumed_config(workdir, watched, resuming=True)  # watching the run differently is no change
  assert not os.path.exists(os.path.join(workdir, workdir_lib.CHANGES_FILE))
  longer = helpers.tiny_byol_config(total_steps=12)
  with pytest.raises(UserError, match="total_steps: 6 -> 12"):
    workdir_lib.check_resumed_config(workdir, longer, resuming=True)
  workdir_lib.check_resumed_config(workdir, longer, resuming=True, allow_change=True)
  with open(os.path.join(workdir, workdir_lib.CHANGES_FILE)) as f:
    assert json.loads(f.read())["changes"] == {"total_steps": [6, 12]}
  workdir_lib.check_resumed_config(workdir, longer, resuming=True)  # the new values are the run's now
