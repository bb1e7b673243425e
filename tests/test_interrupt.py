"""Ctrl-C stops a sweep as interrupted, not finished, and `--resume` (any path form) finishes exactly
the unfinished trials.

A real SIGINT goes to a real driver process: to the driver alone, and to its whole process group as a
terminal's Ctrl-C does. Ray 2.60 catches SIGINT inside `Tuner.fit` and reports every stopped trial as
terminated, so only a test like this one can tell an interrupted sweep from a finished one.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

NUM_TRIALS = 2  # one learning rate x the two freeze schedules: the smallest sweep with an unstarted trial
RESUMED_EPOCH_SCALE = 2.0  # a resumed sweep trains to the end: 4 epochs a trial, 3 left at the signal


def start_driver(demo_dir, tmp_path, *extra, epoch_scale: float = 4.0) -> subprocess.Popen:
    """The smoke sweep's driver; `epoch_scale` 4: the first trial has 7 epochs left at its first epoch line,
    so it is still training when the signal lands, however late a loaded machine delivers it."""
    argv = [sys.executable, "-m", "orchestrator.sweep", "smoke", "--data", str(demo_dir), "--storage", "ray"]
    argv += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"]
    argv += ["--set", "learning_rate=1e-3", "--set", f"epoch_scale={epoch_scale}", "--set", "eval_every_steps=5"]
    argv += extra
    return subprocess.Popen(
        argv,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def interrupt_after_first_epoch(
    driver: subprocess.Popen, whole_group: bool, sig: int = signal.SIGINT
) -> tuple[int, str]:
    """Send `sig` once the driver printed its first epoch line; its exit code and its whole output."""
    lines = []
    deadline = time.monotonic() + 400
    for line in driver.stdout:
        lines.append(line)
        if " epoch " in line and "epoch=" in line:
            break
        assert time.monotonic() < deadline, "".join(lines[-30:])
    if whole_group:
        os.killpg(driver.pid, sig)
    else:
        driver.send_signal(sig)
    try:
        rest, _ = driver.communicate(timeout=300)
    finally:
        kill_group(driver)
    return driver.returncode, "".join(lines) + rest


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def sweep_runs(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def check_interrupted(tmp_path, code: int, output: str, all_started: bool) -> dict[str, str]:
    """The interrupted sweep as the user finds it; returns trial id -> run status of its child runs."""
    assert code == 130, output[-3000:]
    assert "--resume" in output, output[-3000:]
    _, parents, children = sweep_runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "KILLED", "the parent run says interrupted"
    (record_file,) = (tmp_path / "ray").glob("smoke-*/sweep.json")
    assert json.loads(record_file.read_text())["status"] == "interrupted"
    statuses = {c.data.tags["trial_id"]: c.info.status for c in children}
    if not all_started:
        assert len(children) < NUM_TRIALS, "with one trial at a time, some trials never started"
    for child in children:
        completed = child.data.tags.get("trial_state") == "completed"
        assert child.info.status == ("FINISHED" if completed else "KILLED"), child.data.tags
    assert "KILLED" in statuses.values(), "the trial running at the interrupt is unfinished"
    return statuses


def check_resumed(tmp_path, before: dict[str, str]) -> None:
    client, parents, children = sweep_runs(tmp_path)
    assert parents[0].info.status == "FINISHED"
    trial_ids = [c.data.tags["trial_id"] for c in children]
    assert len(trial_ids) == NUM_TRIALS == len(set(trial_ids)), "one run per trial, unstarted trials included"
    assert {c.info.status for c in children} == {"FINISHED"}
    for child in children:
        assert "test_en/accuracy" in child.data.metrics
        attempts = int(child.data.tags["attempt"])  # attempts are tags (issue 25), never metrics
        if before.get(child.data.tags["trial_id"]) == "FINISHED":
            assert attempts == 1, "a trial finished before the interrupt must not train again"


def resume_command(output: str, tmp_path: Path) -> list[str]:
    """The printed `--resume` command, with its directory given relative to the working directory."""
    line = next(line for line in output.splitlines() if "--resume" in line and "orchestrator.sweep" in line)
    directory = line.split("--resume", 1)[1].strip()
    return ["--resume", os.path.relpath(directory, tmp_path)]


def test_sigint_to_the_process_group_interrupts_and_resume_finishes_the_rest(demo_dir, tmp_path):
    one_at_a_time = ("--max-concurrent", "1")
    driver = start_driver(demo_dir, tmp_path, *one_at_a_time, epoch_scale=RESUMED_EPOCH_SCALE)
    code, output = interrupt_after_first_epoch(driver, whole_group=True)
    before = check_interrupted(tmp_path, code, output, all_started=False)

    resume = resume_command(output, tmp_path)
    resumed = start_driver(demo_dir, tmp_path, *one_at_a_time, *resume, epoch_scale=RESUMED_EPOCH_SCALE)
    try:
        output, _ = resumed.communicate(timeout=600)
    finally:
        kill_group(resumed)
    assert resumed.returncode == 0, output[-3000:]
    assert "restoring" in output
    check_resumed(tmp_path, before)


def test_sigint_while_every_trial_runs_interrupts(demo_dir, tmp_path):
    """Every trial started: Tune reports all of them terminated, as if the sweep had finished."""
    all_at_once = ("--max-concurrent", str(NUM_TRIALS), "--cpus-per-trial", "0.25")
    code, output = interrupt_after_first_epoch(start_driver(demo_dir, tmp_path, *all_at_once), whole_group=False)
    check_interrupted(tmp_path, code, output, all_started=True)
    assert f"{NUM_TRIALS} started" in output or output.count(" started ") >= NUM_TRIALS


def test_sigterm_to_the_driver_takes_the_ctrl_c_path(demo_dir, tmp_path):
    """`kill PID`, or SLURM's scancel: the same interrupted sweep as Ctrl-C (runs KILLED, the resume line),
    not Ray's own SIGTERM handler, which exits the driver at once and leaves the runs RUNNING."""
    driver = start_driver(demo_dir, tmp_path, "--max-concurrent", "1")
    code, output = interrupt_after_first_epoch(driver, whole_group=False, sig=signal.SIGTERM)
    check_interrupted(tmp_path, code, output, all_started=False)
