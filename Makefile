# Two commands on a fresh machine (Python 3.10+): `make demo` and `make test`.
# Each sets everything up first (idempotent: a second run skips what is installed).
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint format

setup:
	@scripts/setup.sh

demo: setup  ## the main job on the embedded default: local Ray, demo corpus, tiny model, ./mlruns
	$(PY) -m orchestrator.sweep smoke

test: setup lint  ## ruff, then the whole test suite
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .
