"""The one place a trial touches Ray: reporting metrics (and checkpoints) to Tune."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Reporter(Protocol):
    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None: ...


class ListReporter:
    """Collects reports in memory (tests, benchmarks, running a trial without Ray)."""

    def __init__(self) -> None:
        self.reports: list[dict[str, float]] = []

    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None:
        self.reports.append(dict(metrics))


class TuneReporter:
    def report(self, metrics: dict[str, float], checkpoint_dir: Path | None = None) -> None:
        from ray import tune

        checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        tune.report(metrics, checkpoint=checkpoint)
