"""Mistakes a user can make end in one sentence naming the cause and the fix, losing nothing."""

import os
import subprocess
import sys

import pytest

from jaxssl import train
from jaxssl.data.base import DataError
from jaxssl.errors import UserError
from tests import helpers

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args, timeout=300):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(
      [sys.executable, "-m", "jaxssl.main", *args], cwd=_ROOT, env=env, capture_output=True, text=True, timeout=timeout
  )


def _one_sentence(stderr: str) -> str:
  lines = [l for l in stderr.strip().splitlines() if l.startswith("error:")]
  assert len(lines) == 1, stderr
  assert "Traceback" not in stderr, stderr
  return lines[0]


def test_cli_unknown_config_key(tmp_path):
  result = _cli("--config=configs/byol.py", f"--workdir={tmp_path}", "--config.optimizer.learning_rat=0.1")
  assert result.returncode != 0
  assert "learning_rat" in _one_sentence(result.stderr)


def test_cli_missing_tfds_dataset(tmp_path):
  result = _cli(
      "--config=configs/byol.py", f"--workdir={tmp_path / 'w'}", "--config.data.name=tfds:mnist",
      f"--config.data.data_dir={tmp_path / 'no_data'}",
  )
  assert result.returncode == 1
  message = _one_sentence(result.stderr)
  assert "mnist" in message and "data_dir" in message


def test_missing_image_folder(tmp_path):
  config = helpers.tiny_byol_config(**{"data.name": f"folder:{tmp_path / 'nowhere'}"})
  with pytest.raises(DataError, match="nowhere"):
    train.train_and_evaluate(config, str(tmp_path / "w"))


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  with pytest.raises(UserError, match="not writable"):
    train.train_and_evaluate(helpers.tiny_byol_config(), str(blocker / "run"))


def test_batch_not_divisible_by_devices(tmp_path):
  with pytest.raises(UserError, match="multiple of 8"):
    train.train_and_evaluate(helpers.tiny_byol_config(batch_size=12), str(tmp_path))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  config = helpers.tiny_byol_config(
      **{"optimizer.name": "sgd", "optimizer.base_learning_rate": 1e30, "optimizer.warmup_steps": 0,
         "checkpoint_every": 1, "log_every": 1}
  )
  with pytest.raises(UserError, match="NaN") as error:
    train.train_and_evaluate(config, str(tmp_path))
  kept = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
  assert kept, "the last good checkpoint must survive"
  assert f"step {kept[-1]} is kept" in str(error.value)
  assert "base_learning_rate" in str(error.value) and "dtype" not in str(error.value)  # already float32


@pytest.mark.parametrize(
    "override, named",
    [
        ({"keep_checkpoints": 0}, "keep_checkpoints=0"),
        ({"log_every": 0}, "log_every=0"),
        ({"checkpoint_every": 0}, "checkpoint_every=0"),
        ({"total_steps": 0}, "total_steps=0"),
        ({"method": "nope"}, "config.method 'nope' is not known"),
        ({"model.backbone": "nope"}, "config.model.backbone 'nope' is not known"),
        ({"optimizer.name": "nope"}, "config.optimizer.name 'nope' is not known"),
    ],
)
def test_values_that_cannot_work_fail_before_the_workdir_exists(tmp_path, override, named):
  workdir = tmp_path / "w"
  with pytest.raises(UserError, match=named):
    train.train_and_evaluate(helpers.tiny_byol_config(**override), str(workdir))
  assert not workdir.exists()


@pytest.mark.parametrize(
    "args, named",
    [
        (["--config=configs/simclr.py:nope"], "Unknown preset 'nope' for configs/simclr.py; use '', 'quick'"),
        (["--config=configs/no_such_file.py"], "No such file or directory: 'configs/no_such_file.py'"),
        ([], "--config is required"),
        (["--config=configs/simclr.py", "--config.keep_checkpoints=0"], "config.keep_checkpoints=0 cannot work"),
    ],
)
def test_cli_config_mistakes_are_one_sentence_and_leave_no_workdir(tmp_path, args, named):
  workdir = tmp_path / "w"
  result = _cli(*args, f"--workdir={workdir}")
  assert result.returncode == 1
  assert named in _one_sentence(result.stderr)
  assert not workdir.exists()


def test_a_failed_save_stops_the_run_and_the_last_good_checkpoint_resumes(tmp_path, monkeypatch):
  import errno

  import orbax.checkpoint as ocp

  from jaxssl.checkpoint import CheckpointSaveError

  save = ocp.CheckpointManager.save

  def disk_full_after_step_2(self, step, *args, **kwargs):
    if step > 2:
      raise OSError(errno.ENOSPC, "No space left on device")
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", disk_full_after_step_2)
  config = helpers.tiny_byol_config(checkpoint_every=2)
  with pytest.raises(CheckpointSaveError, match=r"No space left on device.*resume from step 2, the last good checkpoint"):
    train.train_and_evaluate(config, str(tmp_path))
  monkeypatch.setattr(ocp.CheckpointManager, "save", save)
  assert train.train_and_evaluate(config, str(tmp_path))["steps"] == 6


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
  config = helpers.tiny_byol_config(checkpoint_every=2, keep_checkpoints=3)
  assert train.train_and_evaluate(config, str(tmp_path), stop_after_steps=4) == {}
  checkpoints = tmp_path / "checkpoints"
  assert sorted(os.listdir(tmp_path / "checkpoints_checksums")) == ["2.json", "4.json"]
  # Random bytes inside the largest data file of step 4: orbax alone would load them.
  target = max((p for p in (checkpoints / "4").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  data = bytearray(target.read_bytes())
  data[len(data) // 2:len(data) // 2 + 64] = os.urandom(64)
  target.write_bytes(bytes(data))
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert summary["steps"] == 6
  out = capsys.readouterr().out
  assert "checkpoint at step 4" in out and "damaged" in out and "Resuming from step 2" in out


def test_a_second_signal_exits_within_seconds():
  """The first SIGTERM asks for a checkpoint and a clean stop; the second ends the process at once,
  whatever threads (an input pipeline, a save in flight) would keep it alive."""
  import signal
  import textwrap
  import time

  script = textwrap.dedent("""
      import os, signal, threading, time
      from jaxssl import train
      threading.Thread(target=time.sleep, args=(60,)).start()  # a non-daemon thread, as a pipeline's
      with train._StopRequested() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)
        print("stop requested:", stop.requested, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(60)
  """)
  start = time.time()
  result = subprocess.run([sys.executable, "-c", script], cwd=_ROOT, capture_output=True, text=True, timeout=60)
  assert time.time() - start < 20  # importing jax included; the 60 s sleeps are cut short
  assert result.returncode == 128 + signal.SIGTERM, result.stderr
  assert "stop requested: True" in result.stdout and "exiting now" in result.stdout
