"""Command line: python -m jaxssl.main --config=configs/byol.py[:preset] --workdir=DIR [--config.key=value]."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow is only here for clu's writers

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/byol.py or configs/byol.py:quick.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, plots and eval results; re-use it to resume.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume a workdir under a config that differs from its run's (the change is recorded)."
)
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 0, "If > 0, simulate this many CPU devices (to try sharding on a laptop).")


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(1)


def main(argv) -> None:
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}; pass settings as --config.key=value.")
  try:
    config = _CONFIG.value
    if config is not None:
      config.keys()  # ml_collections defers a failure to read the file to the config's first use
  except OSError as e:
    _fail(_explain_config_load_error(e))
  if config is None:
    _fail("--config is required; pass a config file, e.g. --config=configs/brave.py (or configs/brave.py:quick).")
  if _WORKDIR.value is None:
    _fail("--workdir is required; pass a directory for checkpoints and results, e.g. --workdir=runs/byol.")
  import jax

  if _CPU_DEVICES.value:
    jax.config.update("jax_num_cpu_devices", _CPU_DEVICES.value)
  from jaxssl import compilation_cache, parallel, train

  compilation_cache.use_persistent_compilation_cache()
  from jaxssl.data.base import DataError
  from jaxssl.errors import UserError

  logging.set_verbosity(logging.WARNING)
  try:
    parallel.maybe_initialize_distributed()
    train.train_and_evaluate(config, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value)
  except (UserError, DataError) as e:
    _fail(str(e))


def run() -> None:
  """Entry point that turns config-flag mistakes into one sentence instead of a traceback."""
  try:
    app.run(main, flags_parser=_parse_flags)
  except SystemExit:
    raise


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(_explain_flag_error(e))
  except (KeyError, AttributeError, ValueError, TypeError) as e:
    _fail(_explain_flag_error(e))


def _explain_flag_error(error: Exception) -> str:
  lines = [line.strip() for line in str(error).strip().strip('"').splitlines() if line.strip()]
  if not lines:
    return type(error).__name__
  if any(line.startswith("Traceback") for line in lines):
    # The config file's own get_config raised (e.g. an unknown preset): its message is the last
    # line of the traceback ml_collections embeds, and says what to pass instead.
    return lines[-1].split(": ", 1)[-1]
  return f"{lines[0]} (check the --config path and --config.key names against the config file; see README.md)."


def _explain_config_load_error(error: OSError) -> str:
  reason = next((line.strip() for line in str(error).splitlines() if "Errno" in line), str(error).splitlines()[0])
  return f"cannot load the config file ({reason}); pass an existing file, e.g. --config=configs/brave.py."


if __name__ == "__main__":
  run()
