"""Sweeps started at once on a fresh SQLite MLflow store both get their experiment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What the driver does first with a store (orchestrator.sweep.new_sweep), after a common start signal.
FIRST_TOUCH = """
import sys, time
from pathlib import Path
from orchestrator.tracking import client_for
from orchestrator.tracking import ensure_experiment
uri, go = sys.argv[1], Path(sys.argv[2])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.005)
print(ensure_experiment(client_for(uri), "smoke", uri), flush=True)
"""


def test_two_drivers_creating_one_fresh_store_at_once_both_succeed(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for attempt in range(3):
        uri = f"sqlite:///{tmp_path / f'store{attempt}' / 'mlruns' / 'mlflow.db'}"
        go = tmp_path / f"go{attempt}"
        drivers = [
            subprocess.Popen(
                [sys.executable, "-c", FIRST_TOUCH, uri, str(go)],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for driver in drivers:
            assert driver.stdout.readline().strip() == "ready"
        time.sleep(0.1)
        go.touch()
        outcomes = [(d.wait(timeout=300), d.stdout.read().strip(), d.stderr.read()[-1500:]) for d in drivers]
        assert [code for code, _, _ in outcomes] == [0, 0], outcomes
        assert outcomes[0][1] == outcomes[1][1]  # one experiment, found by the second
