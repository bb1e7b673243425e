"""Where one smoke trial's time goes, with MLflow logging in line and on the writer thread, side by side.

    python -m bench profile                 # one trial of each mode, alternated, twice
    python -m bench profile --rounds 1

The trial is the smoke sweep's (tiny encoder, demo corpus, schedule `full`, learning rate 2e-3), run
in this process with a real MLflow store in a temporary directory and a reporter that copies
checkpoints as Tune does. The recipe's steps are timed through its phases (workers/core/phases.py;
self time: a phase's time excludes the timed phases inside it), every tracking call and the writer
thread's work among them; the reporter by wrapping `report`. A phase the table has a row for that the
trial never entered stops the profile, naming it. Process start and imports are timed in a fresh interpreter. The trial
first opens its MLflow run as `workers.trial.train_emotion` does (search + create with the attempt's
tags): with what comes after the trial's own clock stops (`trial_seconds`: the final metrics, model
artifact, figures still on the writer, the final report), that is a reused worker's share of the
per-trial overhead the driver prints (Tune's share, the report's trip and callbacks, comes on top).

Modes: `before` = MLflow calls in line (as before workers/core/artifact_writer.py); `after` = the writer
thread. (An earlier `after` with eval_batch_size 64 doubled the evaluation rounds on a CPU: one
length-sorted batch of 46 clips pads more than three of 16; the default stays 16.) The machine is shared: compare
the two columns of one run, not runs made at different times.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from workers.core.phases import Phase, observe

MODES = {
    "before": {"background_logging": False, "eval_batch_size": 16},
    "after": {"background_logging": True, "eval_batch_size": 16},
}
# The recipe's phases and the row each one's self time goes to (phases not named: their enclosing row's).
PHASE_ROWS = {
    Phase.SETUP: "setup (data, model, params/tags)",
    Phase.TRAIN_STEP: "training steps",
    Phase.EVALUATION_ROUND: "evaluation rounds",
    Phase.FINAL_EVALUATION: "final evaluation (3 sets)",
    Phase.FIGURES: "figures: build",
    Phase.CHECKPOINT: "checkpoint writes",
    Phase.LOGGING_WAIT: "waiting for the writer thread",
}
# Phase.LOGGING: the row by tracking call ("writer": a batch of queued calls run on the writer thread).
LOGGING_ROWS = {
    "log_text": "MLflow: artifacts (text, model)",
    "log_dict": "MLflow: artifacts (text, model)",
    "log_artifacts": "MLflow: artifacts (text, model)",
    "log_model": "MLflow: artifacts (text, model)",
    "log_figure": "figures: render + log",
    "writer": "MLflow",
}
LOGGING_DEFAULT_ROW = "MLflow: params, tags, metrics"
EXPECTED = (*PHASE_ROWS, Phase.LOGGING)
BEFORE_RUN_TRIAL = "reused worker: before run_trial (open run, attempt)"
AFTER_CLOCK = "reused worker: after trial_seconds (final writes, report)"
IMPORTS = "import torch, transformers, mlflow.tracking, workers.finetune.recipe, workers.trial, workers.core.tracking"


class Profiler:
    """Self time per row, per thread: a step's time minus the time of the timed steps it calls."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self._local = threading.local()

    def start(self, row: str) -> None:
        stack = self._local.__dict__.setdefault("stack", [])
        if threading.current_thread() is not threading.main_thread():
            row = f"{row} [writer thread, overlapped]"
        stack.append([row, time.perf_counter(), 0.0])  # row, start, time of the timed steps inside

    def stop(self) -> None:
        stack = self._local.stack
        row, started, children = stack.pop()
        elapsed = time.perf_counter() - started
        self.seconds[row] += elapsed - children
        if stack:
            stack[-1][2] += elapsed

    @contextlib.contextmanager
    def timed(self, row: str):
        self.start(row)
        try:
            yield
        finally:
            self.stop()

    # A phase observer (workers/core/phases.py): the phases with a row are timed.
    def enter(self, name: Phase, info: dict) -> None:
        row = phase_row(name, info)
        if row is not None:
            self.start(row)

    def exit(self, name: Phase, info: dict) -> None:
        if phase_row(name, info) is not None:
            self.stop()

    def wrap(self, function, row: str):
        @functools.wraps(function)
        def timed_call(*args, **kwargs):
            with self.timed(row):
                return function(*args, **kwargs)

        return timed_call


def phase_row(name: Phase, info: dict) -> str | None:
    if name == Phase.LOGGING:
        return LOGGING_ROWS.get(info.get("call"), LOGGING_DEFAULT_ROW)
    return PHASE_ROWS.get(name)


class TimedReporter:
    def __init__(self, reporter, profiler: Profiler):
        self.report = profiler.wrap(reporter.report, "reporter (Tune report, checkpoint copy)")


def import_seconds() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", IMPORTS], check=True)
    return time.perf_counter() - started


def profile_trial(mode: str, root: Path) -> tuple[dict[str, float], float, dict]:
    from mlflow.tracking import MlflowClient

    import search_spaces
    import workers.finetune.recipe as recipe
    from orchestrator.paths import ensure_demo_corpus
    from workers.core.reporting import ListReporter
    from workers.finetune.config import TrialConfig
    from workers.payload import TrackingTarget, TrialPayload
    from workers.trial import open_logger, replay_if_completed

    spec = search_spaces.load("smoke")
    values = {**spec.base, "schedule": "full", "learning_rate": 2e-3, **MODES[mode]}
    values["data_dir"] = str(ensure_demo_corpus(0, log=lambda *_: None))
    tracking_uri = f"sqlite:///{root / mode / 'mlflow.db'}"
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment(mode, artifact_location=str(root / mode / "artifacts"))
    parent_run_id = client.create_run(experiment_id).info.run_id
    tracking = TrackingTarget(tracking_uri, experiment_id, parent_run_id)

    profiler = Profiler()
    reporter = TimedReporter(ListReporter(checkpoint_root=root / mode / "checkpoints"), profiler)
    started = time.perf_counter()
    with profiler.timed(BEFORE_RUN_TRIAL):  # what train_emotion does before run_trial: the trial's run
        logger = open_logger(TrialPayload(values, tracking=tracking), mode, mode)
        assert not replay_if_completed(logger, reporter, checkpoint=None)
        cfg = TrialConfig.from_dict(values)
    expect = EXPECTED if cfg.background_logging else tuple(p for p in EXPECTED if p != Phase.LOGGING_WAIT)
    with observe(profiler, expect=expect), profiler.timed("other (epoch planning, batch waits, optimizer setup)"):
        final = recipe.run_trial(cfg, logger, reporter)
    wall = time.perf_counter() - started
    profiler.seconds[AFTER_CLOCK] = wall - profiler.seconds[BEFORE_RUN_TRIAL] - final["trial_seconds"]
    return dict(profiler.seconds), wall, final


def print_table(imports: float, results: dict[str, list[tuple[dict, float, dict]]]) -> None:
    # AFTER_CLOCK is a span of the trial's wall, not a self time: on its own line below, not a row.
    rows = sorted({row for runs in results.values() for seconds, _, _ in runs for row in seconds} - {AFTER_CLOCK})
    walls = {mode: sum(w for _, w, _ in runs) / len(runs) for mode, runs in results.items()}
    print(f"\n{'':56s}" + "".join(f"{mode:>18s}" for mode in results))
    print(f"  {'process start + imports (fresh interpreter)':54s}" + f"{imports:17.2f}s" * len(results))
    for row in rows:
        cells = ""
        for mode, runs in results.items():
            seconds = sum(s.get(row, 0.0) for s, _, _ in runs) / len(runs)
            share = "" if "writer thread" in row else f" {seconds / walls[mode]:4.0%}"
            cells += f"{seconds:11.2f}s{share:>6s}"
        print(f"  {row:54s}{cells}")
    print(f"  {'trial wall (open the run + run_trial)':54s}" + "".join(f"{walls[mode]:17.2f}s" for mode in results))
    for mode, runs in results.items():
        training = sum(s.get("training steps", 0.0) for s, _, _ in runs) / len(runs)
        accuracy = ", ".join(f"{final['test_en/accuracy']:.3f}" for _, _, final in runs)
        print(
            f"  {mode}: not training {walls[mode] - training:.2f}s of {walls[mode]:.2f}s; test_en/accuracy {accuracy}"
        )
    for mode, runs in results.items():
        before = sum(s.get(BEFORE_RUN_TRIAL, 0.0) for s, _, _ in runs) / len(runs)
        after = sum(s.get(AFTER_CLOCK, 0.0) for s, _, _ in runs) / len(runs)
        print(
            f"  {mode}: worker-side per-trial overhead (outside the trial's own clock) {before + after:.2f}s "
            f"= {before:.2f}s before run_trial + {after:.2f}s after trial_seconds (Tune's own share not included)"
        )
    if {"before", "after"} <= set(walls):
        print(f"  trial wall after / before: {walls['after'] / walls['before']:.2f}x (same run, alternated)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench profile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2, help="trials per mode (alternated)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a smoke trial gets one CPU)")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    imports = import_seconds()
    results: dict[str, list] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        for round_index in range(args.rounds):
            for mode in MODES:
                root = Path(tmp) / f"round{round_index}"
                root.mkdir(exist_ok=True)
                results[mode].append(profile_trial(mode, root))
                print(f"  round {round_index + 1} {mode}: {results[mode][-1][1]:.1f}s", flush=True)
    print_table(imports, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
