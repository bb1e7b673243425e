"""A driver killed mid-sweep (SIGKILL: a crash, a lost head) and `--resume` finish the sweep:
no finished trial trains again, and MLflow ends with one run per trial, none left RUNNING.

The driver runs as a subprocess in its own session with its own local Ray, so killing its
process group takes down exactly what it started.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

NUM_TRIALS = 2  # one learning rate x the two freeze schedules: killed after the first finished


def driver(demo_dir, tmp_path, *extra):
    argv = [
        sys.executable,
        "-m",
        "orchestrator.sweep",
        "smoke",
        "--data",
        str(demo_dir),
        "--storage",
        str(tmp_path / "ray"),
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}",
        "--max-concurrent",
        "1",
        "--set",
        "learning_rate=1e-3",
        "--set",
        "epoch_scale=0.3",
        "--set",
        "eval_every_steps=5",
        *extra,
    ]
    return subprocess.Popen(
        argv,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def kill_group(process):
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def test_killed_driver_resumes_without_rerunning_finished_trials(demo_dir, tmp_path):
    first = driver(demo_dir, tmp_path)
    finished_before_kill, lines = [], []
    try:
        deadline = time.monotonic() + 300
        for line in first.stdout:
            lines.append(line)
            if " finished " in line:
                finished_before_kill.append(line.split()[2])
            if len(finished_before_kill) == 1 or time.monotonic() > deadline:
                break
    finally:
        kill_group(first)
    assert len(finished_before_kill) == 1, "".join(lines[-30:])

    second = driver(demo_dir, tmp_path, "--resume")
    try:
        output, _ = second.communicate(timeout=400)
    finally:
        kill_group(second)
    assert second.returncode == 0, output[-3000:]
    assert "restoring" in output

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].data.tags["resumed"] == "1"
    assert parents[0].info.status == "FINISHED"
    trial_ids = [c.data.tags["trial_id"] for c in children]
    assert len(trial_ids) == NUM_TRIALS == len(set(trial_ids)), "exactly one run per trial"
    assert {c.info.status for c in children} == {"FINISHED"}, "none left RUNNING"
    attempts = {
        c.data.tags["trial_id"]: int(c.data.tags["attempt"])
        for c in children  # attempts are tags, not metrics
    }
    for trial_id in finished_before_kill:
        assert attempts[trial_id] == 1, f"{trial_id} finished before the kill and must not train again"
    # With one trial at a time, at most the one running at the kill trains twice.
    assert sum(attempts.values()) <= NUM_TRIALS + 1
    for child in children:
        assert "test_en/accuracy" in child.data.metrics
