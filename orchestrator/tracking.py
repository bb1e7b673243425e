"""MLflow on the driver side: experiment, parent run, and a Tune callback that closes child runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mlflow.tracking import MlflowClient
from ray import tune

from orchestrator.store_lock import store_lock
from workers.tracking import PARENT_TAG, TRIAL_TAG
from workers.tracking import find_trial_run as find_child_run


def artifact_root_for(tracking_uri: str) -> str | None:
    """Keep artifacts beside a local SQLite store (mlruns/artifacts); servers decide their own."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return None


def ensure_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    with store_lock(tracking_uri):  # a fresh store's creation and the experiment's: one sweep at a time
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        root = artifact_root_for(tracking_uri)
        return client.create_experiment(name, artifact_location=f"{root}/{name}" if root else None)


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list:
    return client.search_runs(
        [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=10_000
    )


def open_parent(client: MlflowClient, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    return client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id


def reopen_parent(client: MlflowClient, parent_run_id: str) -> None:
    """A resumed sweep continues its parent run instead of starting a second one."""
    client.update_run(parent_run_id, status="RUNNING")
    client.set_tag(parent_run_id, "resumed", str(int(client.get_run(parent_run_id).data.tags.get("resumed", "0")) + 1))


def close_open_children(
    client: MlflowClient, experiment_id: str, parent_run_id: str, trial_status: dict[str, str], default: str
) -> dict[str, int]:
    """Give every child run still RUNNING a final status; returns how many got which.

    A run whose trial completed (tag trial_state=completed) is FINISHED; otherwise its trial's
    status from `trial_status` (trial id -> status), else `default`.
    """
    from workers.trial import COMPLETED, STATE_TAG

    closed: dict[str, int] = {}
    for run in child_runs(client, experiment_id, parent_run_id):
        if run.info.status != "RUNNING":
            continue
        if run.data.tags.get(STATE_TAG) == COMPLETED:
            status = "FINISHED"
        else:
            status = trial_status.get(run.data.tags.get(TRIAL_TAG, ""), default)
        client.set_terminated(run.info.run_id, status)
        closed[status] = closed.get(status, 0) + 1
    return closed


class CloseChildRuns(tune.Callback):
    """Marks each trial's child run FINISHED or FAILED when Tune is done with the trial.

    Trials log their own runs; without this, a run whose trial was stopped or crashed stays RUNNING.
    A trial that failed before it could create its run gets one here, so every failure is visible.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, tags: dict[str, str]):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.tags = tags

    def on_trial_complete(self, iteration, trials, trial, **info):
        from workers.trial import COMPLETED, STATE_TAG

        run = find_child_run(MlflowClient(self.tracking_uri), self.experiment_id, self.parent_run_id, trial.trial_id)
        if run is not None and run.data.tags.get(STATE_TAG) != COMPLETED:
            # Ended by the scheduler (ASHA) before its final evaluation: no held-out metrics.
            MlflowClient(self.tracking_uri).set_tag(run.info.run_id, "stopped_early", "true")
        self._close(trial, "FINISHED")

    def on_trial_recover(self, iteration, trials, trial, **info):
        run = find_child_run(MlflowClient(self.tracking_uri), self.experiment_id, self.parent_run_id, trial.trial_id)
        if run is not None:
            client = MlflowClient(self.tracking_uri)
            client.set_tag(run.info.run_id, "retries", str(int(run.data.tags.get("retries", "0")) + 1))
            client.set_tag(run.info.run_id, "last_error", _error_text(trial, "trial failed")[-2000:])

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, "FAILED", error=str(getattr(trial, "error_file", "") or "trial failed"))

    def _close(self, trial, status: str, error: str | None = None) -> None:
        client = MlflowClient(self.tracking_uri)
        run = find_child_run(client, self.experiment_id, self.parent_run_id, trial.trial_id)
        if run is None:
            tags = {PARENT_TAG: self.parent_run_id, TRIAL_TAG: trial.trial_id, **self.tags, **_variant_tags(trial)}
            run = client.create_run(self.experiment_id, tags=tags, run_name=str(trial))
        if error:
            client.set_tag(run.info.run_id, "error", _error_text(trial, error))
        client.set_terminated(run.info.run_id, status)


def _variant_tags(trial) -> dict[str, str]:
    from workers.trial import TAGS_KEY, VARIANT_KEY

    return {k: str(v) for k, v in ((trial.config or {}).get(VARIANT_KEY) or {}).get(TAGS_KEY, {}).items()}


def _error_text(trial, fallback: str) -> str:
    error_file = getattr(trial, "error_file", None)
    try:
        if error_file and Path(error_file).exists():
            return Path(error_file).read_text()[-4000:]
    except OSError:
        pass
    return fallback
