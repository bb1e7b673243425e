"""A PBT trial's side (orchestrator/schedulers.py): its mutable values as metrics, its checkpoint in every report.

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


class RepeatCheckpoint:
    """A PBT trial's reporter: every report carries the trial's latest checkpoint, not only the report that
    made it. PBT copies a top trial's checkpoint at its decision, and a function trainable's `save()` is
    the checkpoint of its last report (None if that report had none), while the recipe reports its best
    model only when it changed: without this, a top trial whose last epoch brought no new best cannot be
    copied, and no exploit happens (Ray's docs: checkpoint at least every perturbation interval)."""

    def __init__(self, reporter, resume_dir: Path | None):
        import tempfile
        import weakref

        self.reporter = reporter
        self.kept = Path(tempfile.mkdtemp(prefix="pbt-checkpoint-"))
        self.has_checkpoint = False
        weakref.finalize(self, _remove, self.kept)
        if resume_dir is not None:
            self._keep(Path(resume_dir))

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None:
        if checkpoint_dir is not None:
            self._keep(Path(checkpoint_dir))
        elif self.has_checkpoint:
            checkpoint_dir = self.kept
        self.reporter.report(metrics, checkpoint_dir=checkpoint_dir)

    def _keep(self, directory: Path) -> None:
        import shutil

        shutil.rmtree(self.kept, ignore_errors=True)
        shutil.copytree(directory, self.kept)
        self.has_checkpoint = True


def _remove(directory: Path) -> None:
    import shutil

    shutil.rmtree(directory, ignore_errors=True)
