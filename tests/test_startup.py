"""The driver's and a trial's start-up: nothing loaded before it is needed, Ray started beside the driver's work."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_the_driver_and_a_trial_load_mlflow_and_sklearn_only_where_used():
    out = run_python(
        """
        import sys
        import orchestrator.sweep
        print("driver mlflow", "mlflow" in sys.modules)
        from workers.kinds import trial_kind
        import workers.trial
        trial_kind("finetune").run_function()  # what a fresh worker imports before its first step
        from workers.core.metrics import classification_metrics, confusion
        classification_metrics("val", [0, 1, 2], [0, 2, 2])  # every evaluation round's scores
        confusion([0, 1, 2], [0, 2, 2])  # the final evaluation's figures
        print("trial sklearn", "sklearn" in sys.modules)
        """
    )
    assert "driver mlflow False" in out  # 3-4 s the driver now spends while Ray starts
    assert "trial sklearn False" in out  # 0.5-2.3 s of a fresh worker's CPU (workers/core/metrics.py)


@pytest.mark.slow
def test_ray_started_on_a_thread_stays_up_after_the_thread_started_it():
    """Ray's GCS and raylet die with the thread that spawned them (PR_SET_PDEATHSIG): the start must not end it."""
    out = run_python(
        """
        import time
        from orchestrator.startup import TIMELINE, start_ray_in_background, wait_for_ray
        start_ray_in_background(None)
        import mlflow  # the driver's own work, meanwhile
        wait_for_ray()
        time.sleep(3)  # a GCS killed with its thread is gone by now
        import ray
        print("answer", ray.get(ray.remote(lambda: 42).options(num_cpus=0).remote(), timeout=120))
        print(TIMELINE.line())
        ray.shutdown()
        """
    )
    assert "answer 42" in out
    assert "Ray start begun" in out and "Ray started" in out
