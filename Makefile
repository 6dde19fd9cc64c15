# The two commands: `make run` (the quickstart: BraVe on built-in audio-visual data) and `make test` (the whole suite).
# Both create .venv with Python >= 3.12 and install jaxssl into it first.

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKDIR ?= runs/brave
CONFIG ?= configs/brave.py

.PHONY: run test install clean

# Finds an interpreter >= 3.12: python3.13/python3.12/python3 on PATH, then pyenv's installs.
define find_python
for c in python3.13 python3.12 python3 $$HOME/.pyenv/versions/3.1[2-9]*/bin/python3 \
         /usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9]; do \
  if command -v $$c >/dev/null 2>&1 && \
     $$c -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then \
    echo $$c; break; \
  fi; \
done
endef

$(STAMP): setup.py constraints.txt
	@py="$$($(find_python))"; \
	if [ -z "$$py" ]; then \
	  echo "error: jaxssl needs Python 3.12 or newer (jax 0.12 requires it) and none was found; install python3.12 and re-run make." >&2; \
	  exit 1; \
	fi; \
	echo "Creating $(VENV) with $$py ($$($$py --version))"; \
	$$py -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m jaxssl.main --config=$(CONFIG) --workdir=$(WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=10 tests

clean:
	rm -rf $(VENV) .jax_cache .pytest_cache
