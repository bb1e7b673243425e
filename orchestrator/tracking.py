"""MLflow on the driver side: the one module of orchestrator/ that imports `mlflow`.

mlflow loads on first use, not at import (3-4 s on 2 cores): the driver starts Ray meanwhile
(orchestrator/startup.py), so `import orchestrator.sweep` stays cheap.

The store (a checked client, runs found and paged), the sweep's parent run (open, reopen, close),
child runs closed and tagged, and batched logging. Tag names come from `workers.vocabulary`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.store_lock import store_lock
from workers.core.tracking import find_trial_run
from workers.vocabulary import ExperimentTag, Key, RunStatus, Tag, TrialState

BATCH = 500  # entries per log_batch call (MLflow accepts at most 1000 metrics in one)
SOURCE_NAME = "python -m orchestrator.sweep"  # the UI's Source of every run a sweep makes

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


class StoreError(RuntimeError):
    """The store cannot be reached, or holds nothing under the name asked for. One line for the user."""


# ---------------------------------------------------------------- the store


def _client_class():
    from mlflow.tracking import MlflowClient

    return MlflowClient


def _mlflow_error():
    from mlflow.exceptions import MlflowException

    return MlflowException


def _entities():
    import mlflow.entities

    return mlflow.entities


def client_for(tracking_uri: str) -> MlflowClient:
    """A client; constructing one creates (and migrates) a fresh SQLite store, so under its lock."""
    with store_lock(tracking_uri):
        return _client_class()(tracking_uri)


def connect(tracking_uri: str) -> MlflowClient:
    """A client for the store, checked to answer; a missing SQLite file is an error, not a new store."""
    # Fail in seconds, not minutes, when a server is down (MLflow retries 7 times with backoff).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///"))
        if not database.is_file():
            raise StoreError(f"no MLflow store at {database} (run a sweep first, or pass --tracking-uri)")
    try:
        client = client_for(tracking_uri)  # not while a sweep is still creating the store
        client.search_experiments(max_results=1)
    except Exception as error:  # any failure here means the same thing to the user
        raise StoreError(f"cannot reach the MLflow store at {tracking_uri}: {first_line(error)}") from None
    return client


def store_call(function, *args, **kwargs):
    """Call the store; any failure becomes one StoreError line."""
    try:
        return function(*args, **kwargs)
    except Exception as error:
        raise StoreError(f"MLflow store error ({function.__name__}): {first_line(error)}") from None


def get_run(client: MlflowClient, run_id: str):
    """The run, or None when the store has no run with that id."""
    try:
        return client.get_run(run_id)
    except _mlflow_error() as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise StoreError(f"cannot read run {run_id} from {client.tracking_uri}: {first_line(error)}") from None


def iter_runs(client: MlflowClient, experiment_id: str, filter_string: str = "", order_by: list[str] | None = None):
    """Every run matching the filter, page by page."""
    page_token = None
    while True:
        page = store_call(
            client.search_runs,
            [experiment_id],
            filter_string=filter_string,
            order_by=order_by,
            max_results=1000,
            page_token=page_token,
        )
        yield from page
        page_token = page.token
        if not page_token:
            return


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list:
    return list(iter_runs(client, experiment_id, filter_string=f"tags.`{Tag.PARENT_RUN}` = '{parent_run_id}'"))


def find_child_run(client: MlflowClient, experiment_id: str, parent_run_id: str, trial_id: str):
    return find_trial_run(client, experiment_id, parent_run_id, trial_id)


def artifact_root_for(tracking_uri: str) -> str | None:
    """Keep artifacts beside a local SQLite store (mlruns/artifacts); servers decide their own."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    return None


def ensure_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """The experiment's id, created if needed, and tagged as model training (an untagged one too)."""
    with store_lock(tracking_uri):  # a fresh store's creation and the experiment's: one sweep at a time
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            root = artifact_root_for(tracking_uri)
            return client.create_experiment(
                name,
                artifact_location=f"{root}/{name}" if root else None,
                tags={ExperimentTag.KIND: ExperimentTag.MODEL_TRAINING},
            )
        if ExperimentTag.KIND not in experiment.tags:  # made by an older version, or by hand
            client.set_experiment_tag(experiment.experiment_id, ExperimentTag.KIND, ExperimentTag.MODEL_TRAINING)
        return experiment.experiment_id


def source_tags(commit: str) -> dict[str, str]:
    """MLflow's own source tags, for parent and child runs: what ran, and at which commit."""
    tags = {Tag.SOURCE_NAME: SOURCE_NAME, Tag.SOURCE_TYPE: "LOCAL"}
    if commit and commit != "unknown":
        tags[Tag.SOURCE_GIT_COMMIT] = commit
    return tags


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def model_uri_exists(tracking_uri: str, uri: str) -> bool:
    """Whether `uri` (`runs:/<run id>/model`, `models:/NAME@alias`, `models:/NAME/VERSION`) names a logged model;
    StoreError when the run or the registered model does not exist or the store cannot be read."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)  # runs:/ finds a run's logged model through the global URI (MLflow 3.17)
    try:
        listed = mlflow.artifacts.list_artifacts(artifact_uri=uri, tracking_uri=tracking_uri)
    except _mlflow_error() as error:
        raise StoreError(first_line(error)) from None
    return bool(listed)


def pin_model_version(tracking_uri: str, uri: str) -> str:
    """`models:/NAME@ALIAS` as the version the alias names now (`models:/NAME/VERSION`), so every trial of a
    sweep starts from that version even if the alias moves; any other URI as it is."""
    if not uri.startswith("models:/") or "@" not in uri:
        return uri
    name, alias = uri.removeprefix("models:/").split("@", 1)
    try:
        version = _client_class()(tracking_uri, registry_uri=tracking_uri).get_model_version_by_alias(name, alias)
    except _mlflow_error() as error:
        raise StoreError(first_line(error)) from None
    return f"models:/{name}/{version.version}"


def register_model(tracking_uri: str, run_id: str, name: str, alias: str) -> str:
    """Register run `run_id`'s MLflow Model `model` as a new version of `name` and point `alias` at it; its version."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)  # register_model works through the global URI
    version = mlflow.register_model(f"runs:/{run_id}/{Key.MODEL_DIR}", name)
    _client_class()(tracking_uri).set_registered_model_alias(name, alias, version.version)
    return version.version


def download_uri(tracking_uri: str, uri: str, directory: str) -> Path:
    """A `runs:/` or `models:/` URI's files into `directory`."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)  # runs:/ finds a run's logged model through the global URI (MLflow 3.17)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=directory, tracking_uri=tracking_uri))


# ---------------------------------------------------------------- writing


def set_tags(client: MlflowClient, run_id: str, tags: dict[str, object]) -> None:
    """All tags in one batched call."""
    for batch in batches([_entities().RunTag(key, str(value)) for key, value in tags.items()]):
        client.log_batch(run_id, tags=batch)


def log_params(client: MlflowClient, run_id: str, params: dict[str, str]) -> None:
    """Params the run lacks, in batches of MLflow's per-call limit (a resumed sweep's are there already)."""
    from mlflow.entities import Param

    logged = client.get_run(run_id).data.params
    new = [Param(key, str(value)) for key, value in params.items() if key not in logged]
    for start in range(0, len(new), 100):
        client.log_batch(run_id, params=new[start : start + 100])


def log_metrics(client: MlflowClient, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    """Metrics in batches (a sweep's fold statistics and best/ copies run into the hundreds)."""
    now = int(time.time() * 1000)
    for batch in batches([_entities().Metric(key, float(value), now, step) for key, value in metrics.items()]):
        client.log_batch(run_id, metrics=batch)


def open_parent(client: MlflowClient, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    return client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id


def reopen_parent(client: MlflowClient, parent_run_id: str) -> None:
    """A resumed sweep continues its parent run instead of starting a second one."""
    client.update_run(parent_run_id, status=RunStatus.RUNNING)
    resumed = int(client.get_run(parent_run_id).data.tags.get(Tag.RESUMED, "0")) + 1
    set_tags(client, parent_run_id, {Tag.RESUMED: resumed})


def close_run(client: MlflowClient, run_id: str, status: str) -> None:
    client.set_terminated(run_id, status)


def close_open_children(
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str,
    trial_status: dict[str, str],
    default: str,
    drop_orphans: bool = False,
) -> dict[str, int]:
    """Give every child run still RUNNING a final status; returns how many got which.

    A run whose trial completed (tag trial_state=completed) is FINISHED; otherwise its trial's
    status from `trial_status` (trial id -> status), else `default`. With `drop_orphans` (a completed
    sweep), a RUNNING run whose trial Tune never recorded (the driver died before Tune first saved
    its experiment, so the trial ran again under a new id) is marked KILLED and soft-deleted, leaving one run
    per trial.
    """
    closed: dict[str, int] = {}
    for run in child_runs(client, experiment_id, parent_run_id):
        if run.info.status != RunStatus.RUNNING:
            continue
        tags = run.data.tags
        if drop_orphans and tags.get(Tag.TRIAL_ID) not in trial_status:
            set_tags(client, run.info.run_id, {Tag.ORPHAN: "trial unknown to the resumed sweep; it ran again"})
            client.set_terminated(run.info.run_id, RunStatus.KILLED)
            client.delete_run(run.info.run_id)
            continue
        if tags.get(Tag.TRIAL_STATE) == TrialState.COMPLETED:
            status = RunStatus.FINISHED
        else:
            status = trial_status.get(tags.get(Tag.TRIAL_ID, ""), default)
        client.set_terminated(run.info.run_id, status)
        closed[status] = closed.get(status, 0) + 1
    return closed


def close_trial_run(
    tracking_uri: str,
    experiment_id: str,
    parent_run_id: str,
    trial_id: str,
    status: str,
    create_tags: dict[str, str],
    run_name: str,
    tags: dict[str, str] | None = None,
    tags_from_run: Callable[[dict[str, str] | None], dict[str, str]] | None = None,
) -> None:
    """End a trial's child run with `status` (and `tags`, plus `tags_from_run` of the run's tags as found,
    None: no run yet); a trial that failed before it could create its run gets one here (with
    `create_tags`), so every failure is visible. One search finds the run for both."""
    client = _client_class()(tracking_uri)
    run = find_trial_run(client, experiment_id, parent_run_id, trial_id)
    tags = {**(tags or {}), **(tags_from_run(None if run is None else dict(run.data.tags)) if tags_from_run else {})}
    if run is None:
        base = {Tag.PARENT_RUN: parent_run_id, Tag.TRIAL_ID: trial_id, **create_tags}
        run = client.create_run(experiment_id, tags=base, run_name=run_name)
    if tags:
        set_tags(client, run.info.run_id, tags)
    client.set_terminated(run.info.run_id, status)


def trial_run_tags(tracking_uri: str, experiment_id: str, parent_run_id: str, trial_id: str) -> dict[str, str] | None:
    """The tags of a trial's child run; None while it has none."""
    run = find_trial_run(_client_class()(tracking_uri), experiment_id, parent_run_id, trial_id)
    return None if run is None else dict(run.data.tags)


def tag_trial_run(tracking_uri: str, experiment_id: str, parent_run_id: str, trial_id: str, tags: dict) -> None:
    client = _client_class()(tracking_uri)
    run = find_trial_run(client, experiment_id, parent_run_id, trial_id)
    if run is not None:
        set_tags(client, run.info.run_id, tags)


# ---------------------------------------------------------------- artifacts


def log_text(client: MlflowClient, run_id: str, text: str, artifact_file: str) -> None:
    client.log_text(run_id, text, artifact_file)


def log_files(client: MlflowClient, run_id: str, directory: Path, files: list[str], artifact_dir: str) -> None:
    """Log exactly `files` (relative to `directory`) under `artifact_dir`, keeping their sub-folders."""
    for name in files:
        client.log_artifact(run_id, str(directory / name), str(Path(artifact_dir, name).parent))


def download(client: MlflowClient, run_id: str, path: str, directory: str) -> Path:
    """A run's artifact (or its logged model, for path `model`) into `directory`."""
    return download_uri(client.tracking_uri, f"runs:/{run_id}/{path}", directory)


def download_if_logged(client: MlflowClient, run_id: str, path: str, directory: str) -> Path | None:
    """The artifact `path` of the run, or None when the run has none (an older or crashed trial);
    StoreError when the store cannot say."""
    folder = str(Path(path).parent) if "/" in path else None
    logged = {a.path for a in store_call(client.list_artifacts, run_id, folder)}
    if path not in logged:
        return None
    return store_call(download, client, run_id, path, directory)


def first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


def batches(items: list, size: int = BATCH) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
