"""The driver's console: one line per trial state change, and a periodic status block.

Plain lines only (no cursor tricks), so a terminal and a CI log read the same:

    [  41.2s] 8f1c2_00003 started   mixed english_fraction=0.5
    [  63.0s] status: 2 running, 3 pending, 4 finished, 0 failed | best val/accuracy 0.512 (8f1c2_00001 zh_only)
              8f1c2_00003 mixed english_fraction=0.5  epoch 2  val/accuracy 0.431

A trial that fails for good prints the last lines of its traceback under its FAILED line (a retried
one, its error's last line), unless the driver runs with --quiet.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from ray import tune

from orchestrator import results
from workers.payload import TrialPayload
from workers.vocabulary import Key, RunStatus, Tag

STATUS_EVERY_SECONDS = 30.0
TRACEBACK_LINES = 15  # of a failed trial's error, on the console


@dataclass
class Console:
    """The driver's console choice. Module state, not a callback field: a restored phase brings back
    Tune's pickled callbacks, and this run's --quiet must still hold."""

    quiet: bool = False


CONSOLE = Console()


def trial_error_text(trial, fallback: str) -> str:
    """The trial's error as Tune recorded it (error.txt: every failure, the last at the end), else `fallback`."""
    error_file = getattr(trial, "error_file", None)
    if error_file and Path(error_file).is_file():
        return Path(error_file).read_text(errors="replace")
    return fallback


class TrialProgress(tune.Callback):
    def __init__(self, metric: str, mode: str, tuned: list[str], status_every_seconds: float = STATUS_EVERY_SECONDS):
        self.metric = metric
        self.mode = mode
        self.tuned = tuned
        self.status_every_seconds = status_every_seconds
        self._reset()

    def _reset(self) -> None:
        self.started = time.perf_counter()
        self.last_status = self.started
        self.trial_started: dict[str, float] = {}
        self.overheads: list[float] = []  # trial wall time minus run_trial's own time, seconds
        self.walls: list[float] = []

    def setup(self, **info):
        self._reset()  # also after Tuner.restore, which brings back a pickled copy of this callback

    # --- one line per state change
    def on_trial_start(self, iteration, trials, trial, **info):
        self.trial_started[trial.trial_id] = time.perf_counter()
        self._line(trial, "started")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if Key.EPOCH in result and Key.TRIAL_SECONDS not in result:
            self._line(trial, "epoch", f"epoch={result[Key.EPOCH]} {self._metric_text(result)}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        self._record_overhead(trial, result)
        tests = " ".join(
            f"{k}={v:.3f}"
            for k, v in sorted(result.items())
            if k.startswith("test_") and k.count("/") == 1 and k.endswith(f"/{Key.ACCURACY}")
        )
        self._line(trial, "finished", f"{self._metric_text(result)} {tests}".strip())

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._line(trial, "retrying", "(failed; continues from its last checkpoint)")
        if not CONSOLE.quiet:
            last = [line for line in trial_error_text(trial, "").splitlines() if line.strip()][-1:]
            if last:
                print(f"          {trial.trial_id} error: {last[0].strip()}", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trial, "FAILED", f"(error on its MLflow run, tag '{Tag.ERROR}')")
        if CONSOLE.quiet:
            return
        text = trial_error_text(trial, "")
        lines = text.rstrip().splitlines()[-TRACEBACK_LINES:]
        if not lines:
            return
        where = f" (whole error: {trial.error_file})" if getattr(trial, "error_file", None) else ""
        body = "\n".join(f"  {trial.trial_id} | {line}" for line in lines)
        print(f"--- {trial.trial_id} traceback, last {len(lines)} lines{where}:\n{body}", flush=True)

    # --- the live table
    def on_step_end(self, iteration, trials, **info):
        now = time.perf_counter()
        if now - self.last_status >= self.status_every_seconds:
            self.last_status = now
            print(self.status(trials), flush=True)

    def on_experiment_end(self, trials, **info):
        print(self.status(trials), flush=True)
        if self.overheads:
            print(
                f"per-trial overhead (wall time outside run_trial): median {statistics.median(self.overheads):.2f}s, "
                f"max {max(self.overheads):.2f}s over {len(self.overheads)} trials; "
                f"median trial wall time {statistics.median(self.walls):.1f}s",
                flush=True,
            )

    def status(self, trials) -> str:
        counts = {"RUNNING": 0, "PENDING": 0, "PAUSED": 0, "TERMINATED": 0, "ERROR": 0}
        for trial in trials:
            counts[trial.status] = counts.get(trial.status, 0) + 1
        head = (
            f"[{self._elapsed():7.1f}s] status: {counts['RUNNING']} running, "
            f"{counts['PENDING'] + counts['PAUSED']} pending, {counts['TERMINATED']} finished, "
            f"{counts['ERROR']} failed"
        )
        best = self._best(trials)
        if best is not None:
            head += (
                f" | best {self.metric} {best.last_result[self.metric]:.3f} ({best.trial_id} {self._describe(best)})"
            )
        lines = [head]
        for trial in trials:
            if trial.status == "RUNNING":
                result = trial.last_result or {}
                epoch = f"epoch {result[Key.EPOCH]}  " if Key.EPOCH in result else ""
                line = f"          {trial.trial_id} {self._describe(trial)}  {epoch}{self._metric_text(result)}"
                lines.append(line.rstrip())
        return "\n".join(lines)

    # --- helpers
    def _best(self, trials):
        """The best by the sweep's one rule (`results.best`): finished trials only, a configuration once
        all its folds finished; a trial's last result stands in for its run's metrics."""
        by_id = {t.trial_id: t for t in trials}
        chosen = results.best([trial_view(t) for t in trials], self.metric, self.mode)
        return by_id[chosen.run_id] if chosen is not None else None

    def _record_overhead(self, trial, result: dict) -> None:
        started = self.trial_started.get(trial.trial_id)
        if started is None or Key.TRIAL_SECONDS not in result:
            return
        wall = time.perf_counter() - started
        self.walls.append(wall)
        self.overheads.append(wall - float(result[Key.TRIAL_SECONDS]))

    def _describe(self, trial) -> str:
        payload = TrialPayload.from_config(trial.config)
        values, tags = payload.values, payload.tags
        parts = [tags.get(Tag.SCENARIO, ""), tags.get(Tag.FOLD, "")]
        parts += [f"{k}={values.get(k)}" for k in self.tuned if k in values]
        return " ".join(p for p in parts if p)

    def _metric_text(self, result: dict) -> str:
        value = result.get(self.metric)
        return f"{self.metric}={value:.3f}" if isinstance(value, (int, float)) else ""

    def _elapsed(self) -> float:
        return time.perf_counter() - self.started

    def _line(self, trial, state: str, extra: str = "") -> None:
        print(
            f"[{self._elapsed():7.1f}s] {trial.trial_id} {state:9s} {self._describe(trial)} {extra}".rstrip(),
            flush=True,
        )


def trial_view(trial) -> results.TrialRun:
    """A Tune trial as the results layer sees a run: FINISHED once it ended with its final report (the one
    with `trial_seconds`; a trial ASHA stopped at an epoch report never has it), its variant's tags."""
    result = trial.last_result or {}
    done = trial.status == "TERMINATED" and Key.TRIAL_SECONDS in result
    tags = TrialPayload.from_config(trial.config).tags
    return results.TrialRun(
        run_id=trial.trial_id,
        name=trial.trial_id,
        status=RunStatus.FINISHED if done else RunStatus.RUNNING,
        scenario=tags.get(Tag.SCENARIO, ""),
        tags={**tags, Tag.TRIAL_ID: trial.trial_id},
        params={},
        metrics={k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
        start_time=None,
        end_time=None,
    )
