"""Two processes x 4 CPU devices on loopback train what 1 process x 8 devices does, and resume
exactly after one of them dies. Each process is the real command line (`jaxssl.main`), joined
through `jax.distributed` with the coordinator on 127.0.0.1, reading its own rows through grain.

"What 1 process x 8 devices does" is checked where float32 allows: the first steps agree to
round-off. Later steps drift apart, as much as 1 x 4 and 1 x 8 devices in one process drift from
each other (measured: the third step's gradient norm differs by 0.3% between 1, 4 and 8 devices),
because the order of the cross-device sums changes the round-off and training amplifies it.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

_ROOT = pathlib.Path(__file__).resolve().parent.parent
_TOTAL_STEPS, _CHECKPOINT_EVERY, _CRASH_AT = 12, 4, 8
_TIMEOUT = 300


def _config_file(directory: pathlib.Path) -> str:
  """A small SimCLR (BatchNorm, so cross-device statistics matter) on the built-in digits; at
  width 4 the first gradient already differs in the fourth digit between 1 and 8 devices."""
  path = directory / "tiny_simclr.py"
  path.write_text(textwrap.dedent(f"""
      import sys
      sys.path.insert(0, {str(_ROOT / "tests")!r})
      sys.path.insert(0, {str(_ROOT)!r})
      import helpers
      from configs import simclr

      def get_config():
        return helpers.tiny_config(simclr.get_config(), **{{
            "model.width_multiplier": 0.25, "batch_size": 32,
            "model.projector_hidden_dim": 64, "model.projection_dim": 32, "total_steps": {_TOTAL_STEPS},
            "checkpoint_every": {_CHECKPOINT_EVERY}, "log_every": 2, "keep_checkpoints": 10,
            "eval.max_train_examples": 64, "eval.max_test_examples": 32}})
  """))
  return str(path)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(**extra) -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_FLAGS"))}
  # Small models: XLA's optimisation passes cost more time than they save (as in conftest.py).
  return {**env, "JAX_DISABLE_MOST_OPTIMIZATIONS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def _command(config: str, workdir: str, devices: int) -> list[str]:
  return [sys.executable, str(_ROOT / "tests" / "multiprocess_worker.py"), f"--config={config}", f"--workdir={workdir}", f"--cpu_devices={devices}"]


def _run_pair(config: str, workdir: str, crash_process_1_at: int = 0) -> list[subprocess.CompletedProcess]:
  """Runs the two processes of one job; if process 1 dies, ends process 0 too, as a job
  scheduler would, and returns both outcomes."""
  port = _free_port()
  procs = []
  for index in range(2):
    env = _env(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(index))
    if index == 1 and crash_process_1_at:
      env["JAXSSL_TEST_CRASH_AT_SAVE"] = str(crash_process_1_at)
    log = open(os.path.join(workdir + f".process{index}.log"), "w+")
    procs.append((subprocess.Popen(_command(config, workdir, 4), cwd=_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True), log))
  deadline = time.time() + _TIMEOUT
  while time.time() < deadline and all(p.poll() is None for p, _ in procs):
    time.sleep(0.2)
  if procs[1][0].poll() is not None and procs[0][0].poll() is None and procs[1][0].returncode != 0:
    procs[0][0].send_signal(signal.SIGKILL)  # its peer is gone: the collectives would only hang
  results = []
  for p, log in procs:
    try:
      p.wait(timeout=max(deadline - time.time(), 1))
    except subprocess.TimeoutExpired:
      p.kill()
      p.wait()
    log.seek(0)
    results.append(subprocess.CompletedProcess(p.args, p.returncode, log.read(), ""))
    log.close()
  return results


def _metrics(workdir: str) -> dict[int, dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {r["step"]: r for r in map(json.loads, f)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  base = tmp_path_factory.mktemp("multiprocess")
  config = _config_file(base)
  single = str(base / "single")  # only its first steps are compared: it stops at the first save
  result = subprocess.run(_command(config, single, 8), cwd=_ROOT, env=_env(JAXSSL_TEST_CRASH_AT_SAVE=str(_CHECKPOINT_EVERY)),
                          capture_output=True, text=True, timeout=_TIMEOUT)
  assert result.returncode == 17, result.stdout[-3000:] + result.stderr[-3000:]
  pair = str(base / "pair")
  crashed = _run_pair(config, pair, crash_process_1_at=_CRASH_AT)
  steps_after_crash = sorted(int(name) for name in os.listdir(os.path.join(pair, "checkpoints")) if name.isdigit())
  metrics_after_crash = _metrics(pair)
  resumed = _run_pair(config, pair)
  return dict(single=single, pair=pair, crashed=crashed, steps_after_crash=steps_after_crash,
              metrics_after_crash=metrics_after_crash, resumed=resumed)


def test_crash_of_one_process_leaves_the_last_checkpoint(runs):
  assert runs["crashed"][1].returncode == 17, runs["crashed"][1].stdout[-3000:]
  assert runs["crashed"][0].returncode != 0  # ended with its peer
  assert runs["steps_after_crash"] == [_CHECKPOINT_EVERY]  # the step-8 save never started in process 1
  assert max(runs["metrics_after_crash"]) == _CRASH_AT  # it had trained up to the crash


def test_pair_resumes_exactly_from_the_last_checkpoint(runs):
  for result in runs["resumed"]:
    assert result.returncode == 0, result.stdout[-3000:]
  assert f"Resuming from step {_CHECKPOINT_EVERY}" in runs["resumed"][0].stdout
  resumed, crashed = _metrics(runs["pair"]), runs["metrics_after_crash"]
  assert sorted(resumed) == list(range(1, _TOTAL_STEPS + 1))
  for step in range(_CHECKPOINT_EVERY + 1, _CRASH_AT + 1):  # trained twice: before the crash and after the resume
    assert resumed[step] == crashed[step], step


def test_two_processes_train_what_one_process_trains(runs):
  single, pair = _metrics(runs["single"]), _metrics(runs["pair"])
  # The same global batch and a gradient reduced over both processes: the first loss and
  # gradient agree to round-off, and so does the loss after the first update.
  for key in ("loss", "grad_norm", "embedding_std"):
    assert pair[1][key] == pytest.approx(single[1][key], rel=1e-5), key
  assert pair[2]["loss"] == pytest.approx(single[2]["loss"], rel=1e-5)


def test_evaluation_runs_in_every_process_and_process_0_writes_it(runs):
  with open(os.path.join(runs["pair"], "eval", "summary.json")) as f:
    summary = json.load(f)
  assert summary["environment"]["process_count"] == 2 and summary["environment"]["device_count"] == 8
  assert summary["steps"] == _TOTAL_STEPS and 0 <= summary["knn_top1"] <= 100
  assert os.path.isdir(os.path.join(runs["pair"], "export", "backbone", "variables"))
  assert "knn_top1" not in runs["resumed"][1].stdout  # only process 0 prints the summary
