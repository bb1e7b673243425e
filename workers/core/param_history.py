"""A trial's mutable values (PBT, orchestrator/schedulers.py) as metrics: MLflow refuses a param's new value.

A trial PBT may change logs its mutable keys as params once, at its first start (their first values),
and as metrics `pbt/<key>` at every start: step 0 first, then the training step a restore continues
from (an exploit: another trial's checkpoint with new values; a retry: its own, values unchanged).
The run's params stay what they were; `pbt/<key>` is the history (Ray issues 20473, 30649).
"""

from __future__ import annotations

import json
from pathlib import Path

from workers.vocabulary import Key

TRAIN_STATE_FILE = "train_state.json"  # workers/finetune/checkpoint.py's: where a checkpoint's step is


class ParamHistory:
    """Wraps a RunLogger: `log_params` keeps the mutable keys out of a restored run's params and logs
    them as `pbt/<key>` metrics at the step the trial starts from."""

    def __init__(self, logger, mutable: tuple[str, ...], resume_dir: Path | None):
        self.logger = logger
        self.mutable = mutable
        self.resumed = resume_dir is not None
        self.step = checkpoint_step(resume_dir)

    def log_params(self, params: dict) -> None:
        params, numbers = self._split(params)
        self.logger.log_params(params)
        if numbers:
            self.logger.log_metrics(numbers, step=self.step)

    def _log_batch(self, params=None, tags=None, metrics_by_step=None) -> None:
        """`log_batch` of an MLflow run (the background writer's one round trip), the params split as above."""
        params, numbers = self._split(params or {})
        steps = dict(metrics_by_step or {})
        if numbers:
            steps[self.step] = {**steps.get(self.step, {}), **numbers}
        self.logger.log_batch(params=params, tags=tags, metrics_by_step=steps)

    def _split(self, params: dict) -> tuple[dict, dict[str, float]]:
        """(the params to log, the mutable keys' values as `pbt/<key>` metrics)."""
        current = {k: params[k] for k in self.mutable if k in params}
        if self.resumed:  # logged at the first start; a new value would be refused
            params = {k: v for k, v in params.items() if k not in current}
        return params, {f"{Key.PBT_PREFIX}{k}": float(v) for k, v in current.items() if _is_number(v)}

    def __getattr__(self, name: str):
        if name == "log_batch" and hasattr(self.logger, "log_batch"):
            return self._log_batch  # only where the wrapped logger has one (the writer checks with hasattr)
        return getattr(self.logger, name)


def checkpoint_step(resume_dir: Path | None) -> int:
    """The training step a checkpoint continues from (0: none, or a kind that keeps no step)."""
    if resume_dir is None:
        return 0
    path = Path(resume_dir) / TRAIN_STATE_FILE
    if not path.is_file():
        return 0
    return int(json.loads(path.read_text()).get("step", 0))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
