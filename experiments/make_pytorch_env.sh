#!/usr/bin/env bash
# Builds the PyTorch environment that experiments/pytorch_byol_step.py runs in, for the benchmark's
# side-by-side comparison only: PyTorch is never a dependency of jaxssl.
# Python 3.12 and PyPI's default torch wheel for x86_64 (a CUDA build: it needs ~3 GB of
# nvidia-*/triton wheels even to import, and runs on the CPU). About 3 minutes and 5.4 GB the first
# time; re-running only checks the pinned versions.
#   bash experiments/make_pytorch_env.sh            # builds .venv-torch
#   VENV=/path/to/venv PYTHON=python3.12 bash experiments/make_pytorch_env.sh
set -euo pipefail
VENV=${VENV:-.venv-torch}

if [ ! -x "$VENV/bin/python" ]; then
  PY=""
  for candidate in "${PYTHON:-}" python3.12 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12; do
    if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      PY=$candidate; break
    fi
  done
  [ -n "$PY" ] || { echo "make_pytorch_env.sh: no Python 3.12 found; set PYTHON=" >&2; exit 1; }
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet torch==2.14.1 numpy==2.5.5
"$VENV/bin/python" -c 'import torch; torch.randn(2, 2) @ torch.randn(2, 2); print("torch", torch.__version__, "runs on the CPU")'
