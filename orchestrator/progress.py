"""One line per trial state change on the driver's console."""
from __future__ import annotations

import time

from ray import tune


class TrialProgress(tune.Callback):
    def __init__(self, metric: str, tuned: list[str]):
        self.metric = metric
        self.tuned = tuned
        self.started = time.perf_counter()

    def _line(self, trial, state: str, extra: str = "") -> None:
        knobs = " ".join(f"{k}={trial.config.get(k)}" for k in self.tuned)
        print(f"[{time.perf_counter() - self.started:7.1f}s] {trial.trial_id} {state:9s} {knobs} {extra}".rstrip(), flush=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._line(trial, "started")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "epoch" in result:
            value = result.get(self.metric)
            shown = f"{self.metric}={value:.3f}" if isinstance(value, float) else f"val/loss={result.get('val/loss', float('nan')):.3f}"
            self._line(trial, "epoch", f"epoch={result['epoch']} {shown}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._line(trial, "finished")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trial, "FAILED", "(error on its MLflow run)")
