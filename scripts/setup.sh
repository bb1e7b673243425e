#!/usr/bin/env bash
# Idempotent setup: a virtualenv in .venv with torch and the project (editable, with the dev extra).
# A second run installs nothing unless pyproject.toml changed. The venv sees the machine's own
# packages (--system-site-packages), so a CUDA torch installed for the machine's driver is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV" >&2
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    # The CPU build: an unpinned torch would pull several GB of CUDA wheels. On a GPU machine,
    # install the CUDA build for your driver first; this step then finds it and skips.
    echo "setup: installing torch 2.13.0 (CPU build)" >&2
    "${PIP[@]}" torch==2.13.0
fi
STAMP="$VENV/.emotion-sweep-installed"
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    echo "setup: installing emotion-sweep and its dev extra into $VENV" >&2
    "${PIP[@]}" -e ".[dev]"
    touch "$STAMP"
fi
