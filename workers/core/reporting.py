"""The one place a trial touches Ray: reporting metrics (and checkpoints) to Tune."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Reporter(Protocol):
    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None: ...


class ListReporter:
    """Collects reports in memory (tests, benchmarks, running a trial without Ray).

    With `checkpoint_root`, reported checkpoint directories are copied there as Tune would
    (`checkpoints[i]` is the copy made for `reports[i]`, or None); the trial deletes its own.
    """

    def __init__(self, checkpoint_root: Path | None = None) -> None:
        self.reports: list[dict[str, float]] = []
        self.checkpoints: list[Path | None] = []
        self.checkpoint_root = Path(checkpoint_root) if checkpoint_root else None

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None:
        self.reports.append(dict(metrics))
        kept = None
        if checkpoint_dir is not None and self.checkpoint_root is not None:
            import shutil

            kept = self.checkpoint_root / f"checkpoint_{len(self.reports) - 1:06d}"
            shutil.copytree(checkpoint_dir, kept)
        self.checkpoints.append(kept)


class TuneReporter:
    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None:
        from ray import tune

        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)
