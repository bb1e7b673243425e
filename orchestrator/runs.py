"""A sweep read back from MLflow: its parent run, its trial runs, and how they rank.

Shared by `orchestrator.report` and `orchestrator.predict`. Only MLflow's client is needed here
(no Ray, no torch), so reading results stays cheap.
"""

from __future__ import annotations

import ast
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from workers.tracking import PARENT_TAG, TRIAL_TAG

# Selection is on validation clips of the training speakers; held-out test sets never choose.
RANK_METRIC = "val/accuracy"
TIEBREAK_METRIC = "val/loss"  # lower is better; small validation sets tie often on accuracy
RUN_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")


class StoreError(RuntimeError):
    """The store cannot be reached, or holds nothing under the name asked for. One line for the user."""


@dataclass(frozen=True)
class Trial:
    """One child run, flattened to plain values."""

    run_id: str
    name: str
    status: str  # RUNNING, FINISHED, FAILED, KILLED, SCHEDULED
    scenario: str
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    start_time: int | None  # ms since the epoch
    end_time: int | None

    @property
    def trial_id(self) -> str:
        return self.tags.get(TRIAL_TAG) or self.name or self.run_id[:8]

    @property
    def fold(self) -> str | None:
        return self.tags.get("fold")

    @property
    def config_id(self) -> str | None:
        return self.tags.get("config_id")

    @property
    def error(self) -> str | None:
        return self.tags.get("error")

    @property
    def error_line(self) -> str:
        """The last line of the error (a traceback's last line is the exception and its message)."""
        lines = [line.strip() for line in (self.error or "").splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def metric(self, key: str) -> float | None:
        value = self.metrics.get(key)
        return None if value is None or math.isnan(value) else value

    @property
    def eval_sets(self) -> list[str]:
        """Sets with final metrics, `val` first, then the held-out sets by name."""
        sets = {key.split("/")[0] for key in self.metrics if key.endswith("/accuracy") and key.count("/") == 1}
        return sorted(sets, key=lambda s: (s != "val", s))

    @property
    def test_sets(self) -> list[str]:
        return [s for s in self.eval_sets if s != "val"]

    def speakers_of(self, set_name: str) -> str:
        """Speakers of an evaluation set from the flattened config (`eval_sets.test_en` = "('0015',)")."""
        raw = self.params.get(f"eval_sets.{set_name}")
        if raw is None:
            return self.tags.get("test_speakers", "") if set_name != "val" else ""
        try:
            return ",".join(str(s) for s in ast.literal_eval(raw))
        except (ValueError, SyntaxError):
            return raw

    @property
    def rankable(self) -> bool:
        return self.status == "FINISHED" and self.metric(RANK_METRIC) is not None


@dataclass(frozen=True)
class Sweep:
    tracking_uri: str
    experiment_id: str
    experiment_name: str
    parent_id: str
    parent_name: str
    parent_status: str
    parent_tags: dict[str, str]
    parent_start_time: int | None
    parent_end_time: int | None
    trials: list[Trial]

    @property
    def name(self) -> str:
        return self.parent_tags.get("sweep") or self.experiment_name

    @property
    def scenarios(self) -> list[str]:
        return sorted({t.scenario for t in self.trials})

    def count_by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for trial in self.trials:
            counts[trial.status] = counts.get(trial.status, 0) + 1
        return dict(sorted(counts.items()))


def rank_key(trial: Trial) -> tuple:
    loss = trial.metric(TIEBREAK_METRIC)
    return (-(trial.metric(RANK_METRIC) or 0.0), loss if loss is not None else math.inf, trial.trial_id)


def ranked(trials: list[Trial]) -> list[Trial]:
    """Finished trials best first by validation accuracy; the rest after them, in trial order."""
    finished = sorted((t for t in trials if t.rankable), key=rank_key)
    others = sorted((t for t in trials if not t.rankable), key=lambda t: t.trial_id)
    return finished + others


def best(trials: list[Trial]) -> Trial | None:
    candidates = [t for t in trials if t.rankable]
    return min(candidates, key=rank_key) if candidates else None


def best_per_scenario(sweep: Sweep) -> dict[str, Trial | None]:
    return {s: best([t for t in sweep.trials if t.scenario == s]) for s in sweep.scenarios}


def connect(tracking_uri: str):
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

    from orchestrator.store_lock import open_store

    try:
        client = open_store(tracking_uri)  # not while a sweep is still creating the store
        client.search_experiments(max_results=1)
    except Exception as error:  # any failure here means the same thing to the user
        raise StoreError(f"cannot reach the MLflow store at {tracking_uri}: {_first_line(error)}") from None
    return client


def find_parent(client, ref: str, experiment: str | None = None):
    """The parent run a reference names: a parent run id, a trial run id (its parent), or a sweep
    name (the latest parent run in the experiment of that name, or in `experiment`)."""
    if RUN_ID_PATTERN.match(ref):
        run = get_run(client, ref)
        if run is not None:
            parent_id = run.data.tags.get(PARENT_TAG)
            return get_run(client, parent_id) if parent_id else run
    experiment_name = experiment or ref
    found = _call(client.get_experiment_by_name, experiment_name)
    if found is None:
        names = sorted(e.name for e in _call(client.search_experiments, max_results=200))
        raise StoreError(
            f"no sweep or run {ref!r} in {client.tracking_uri}; experiments there: {', '.join(names) or 'none'}"
        )
    for run in _iter_runs(client, found.experiment_id, order_by=["attributes.start_time DESC"]):
        tags = run.data.tags
        if PARENT_TAG in tags:
            continue
        if experiment and ref != experiment and tags.get("sweep") != ref:
            continue
        return run
    raise StoreError(
        f"experiment {experiment_name!r} has no sweep parent run"
        + (f" for sweep {ref!r}" if experiment and ref != experiment else "")
    )


def load_sweep(client, parent) -> Sweep:
    experiment = _call(client.get_experiment, parent.info.experiment_id)
    default_scenario = parent.data.tags.get("sweep") or experiment.name
    runs = _iter_runs(client, parent.info.experiment_id, filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    trials = [_trial(run, default_scenario) for run in runs]
    return Sweep(
        tracking_uri=client.tracking_uri,
        experiment_id=experiment.experiment_id,
        experiment_name=experiment.name,
        parent_id=parent.info.run_id,
        parent_name=parent.info.run_name or parent.info.run_id[:8],
        parent_status=parent.info.status,
        parent_tags=dict(parent.data.tags),
        parent_start_time=parent.info.start_time,
        parent_end_time=parent.info.end_time,
        trials=sorted(trials, key=lambda t: t.trial_id),
    )


def _trial(run, default_scenario: str) -> Trial:
    tags = dict(run.data.tags)
    return Trial(
        run_id=run.info.run_id,
        name=run.info.run_name or "",
        status=run.info.status,
        scenario=tags.get("scenario") or default_scenario,
        tags=tags,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        start_time=run.info.start_time,
        end_time=run.info.end_time,
    )


def _iter_runs(client, experiment_id: str, filter_string: str = "", order_by: list[str] | None = None):
    page_token = None
    while True:
        page = _call(
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


def get_run(client, run_id: str):
    """The run, or None when the store has no run with that id."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise StoreError(f"cannot read run {run_id} from {client.tracking_uri}: {_first_line(error)}") from None


def _call(function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except Exception as error:
        raise StoreError(f"MLflow store error ({function.__name__}): {_first_line(error)}") from None


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]
