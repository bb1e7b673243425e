"""Where a trial's numbers go: a small logger interface, and its MLflow implementation.

The training loop only sees `RunLogger`; it never names MLflow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

# Tag that identifies a trial's child run, so a restored trial finds its run instead of duplicating it.
TRIAL_TAG = "trial_id"
PARENT_TAG = "mlflow.parentRunId"


class RunLogger(Protocol):
    def log_params(self, params: dict) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_figure(self, figure, artifact_file: str) -> None: ...
    def log_artifacts(self, local_dir: str, artifact_path: str) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...


class NullLogger:
    """For runs outside a sweep (tests, benchmarks)."""

    def log_params(self, params: dict) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_artifacts(self, local_dir: str, artifact_path: str) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...

    def log_figure(self, figure, artifact_file: str) -> None:
        import matplotlib.pyplot as plt

        plt.close(figure)  # figures are created per evaluation set; unclosed ones pile up


@dataclass(frozen=True)
class TrackingTarget:
    """Where the driver wants a trial's child run: plain values, so it travels in a Tune config."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    tags: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_dict(cls, values: dict) -> TrackingTarget:
        return cls(
            values["tracking_uri"],
            values["experiment_id"],
            values["parent_run_id"],
            tuple(tuple(t) for t in values.get("tags", ())),
        )


def find_trial_run(client, experiment_id: str, parent_run_id: str, trial_id: str):
    """The child run of trial `trial_id` under `parent_run_id`, or None: the one definition of a
    trial's run, shared by the trial (find or create) and the driver (close, resume)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{TRIAL_TAG} = '{trial_id}' and tags.`{PARENT_TAG}` = '{parent_run_id}'",
        max_results=1,
    )
    return runs[0] if runs else None


class MlflowRunLogger:
    """Logs to one MLflow run through MlflowClient (no global active run: safe with actor reuse)."""

    def __init__(self, tracking_uri: str, run_id: str):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri)
        self.run_id = run_id

    @classmethod
    def for_trial(cls, target: TrackingTarget, trial_id: str, run_name: str) -> MlflowRunLogger:
        """Find the trial's child run under the parent, or create it."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(target.tracking_uri)
        existing = find_trial_run(client, target.experiment_id, target.parent_run_id, trial_id)
        if existing is not None:
            run_id = existing.info.run_id
            client.update_run(run_id, status="RUNNING")
        else:
            tags = {PARENT_TAG: target.parent_run_id, TRIAL_TAG: trial_id, **dict(target.tags)}
            run_id = client.create_run(target.experiment_id, tags=tags, run_name=run_name).info.run_id
        return cls(target.tracking_uri, run_id)

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in _flatten(params).items()]
        for start in range(0, len(items), 100):
            try:
                self.client.log_batch(self.run_id, params=items[start : start + 100])
            except Exception:  # a resumed run re-logs params it already has; values are equal
                pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        for start in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[start : start + 500])

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_figure(self, figure, artifact_file: str) -> None:
        import matplotlib.pyplot as plt

        self.client.log_figure(self.run_id, figure, artifact_file)
        plt.close(figure)

    def log_artifacts(self, local_dir: str, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, local_dir, artifact_path)

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
