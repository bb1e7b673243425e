"""Where a trial's numbers go: a small logger interface, and its MLflow implementation.

The training loop only sees `RunLogger`; it never names MLflow. This is the one module on the
worker side that imports mlflow (lazily: the driver imports it cheaply).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from workers.payload import TrackingTarget
from workers.vocabulary import DatasetContext, Key, ServingColumn, Tag, Task, TrialState


@dataclass(frozen=True)
class CorpusSplit:
    """One split of the corpus a trial reads (train, val, a test set): a dataset input of its run."""

    name: str
    content_hash: str  # the shards' (manifest) hash
    data_dir: str
    split: str
    num_clips: int
    speakers: tuple[str, ...]


class RunLogger(Protocol):
    attempt: int  # which attempt of the trial logs (1, 2, ...: Tune retries a failed trial)

    def log_params(self, params: dict) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_dict(self, dictionary: dict, artifact_file: str) -> None: ...
    def log_figure(self, figure, artifact_file: str) -> None: ...
    def log_artifacts(self, local_dir: str, artifact_path: str) -> None: ...
    def log_model(
        self, model_dir: str, metrics: dict[str, float] | None = None, step: int | None = None, model_step: int = 0
    ) -> None:
        """A saved model directory (workers.finetune.checkpoint) as the run's MLflow Model `model/`, and the
        model's final `metrics` (logged once, at `step`) linked to it; `model_step`: the training step it was
        taken at."""

    def set_tags(self, tags: dict[str, str]) -> None: ...
    def run_tags(self) -> dict[str, str]:
        """The tags the run holds now (a retried trial's run holds its earlier attempts' tags)."""

    def log_datasets(self, splits: list[CorpusSplit]) -> None: ...
    def completed_metrics(self) -> dict[str, float] | None:
        """The metrics of a run already marked completed (Tag.TRIAL_STATE), else None."""


class NullLogger:
    """For runs outside a sweep (tests, benchmarks)."""

    attempt = 1

    def log_params(self, params: dict) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_dict(self, dictionary: dict, artifact_file: str) -> None: ...
    def log_artifacts(self, local_dir: str, artifact_path: str) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_datasets(self, splits: list[CorpusSplit]) -> None: ...

    def run_tags(self) -> dict[str, str]:
        return {}

    def completed_metrics(self) -> dict[str, float] | None:
        return None  # nothing is recorded, so nothing ever completed

    def log_model(
        self, model_dir: str, metrics: dict[str, float] | None = None, step: int | None = None, model_step: int = 0
    ) -> None:
        if metrics:
            self.log_metrics(metrics, step=step)  # a recording subclass sees the final metrics as logged

    def log_figure(self, figure, artifact_file: str) -> None:
        import matplotlib.pyplot as plt

        plt.close(figure)  # figures are created per evaluation set; unclosed ones pile up


def attempt_record(attempt: int) -> tuple[dict[str, str], dict[str, float]]:
    """(tags, metrics) that record attempt number `attempt` (1 for the first): where and when it runs.

    Tags only (metrics: none): a timestamp or a counter logged as a metric becomes what the UI's
    Models tab and charts show first."""
    now = time.time()
    tags = {
        Tag.ATTEMPT: str(attempt),
        Tag.STARTED_AT: f"{now:.3f}",
        Tag.attempt_started(attempt): f"{now:.3f}",
        Tag.CUDA_VISIBLE_DEVICES: os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        Tag.HOST: os.uname().nodename,
        Tag.RAY_NODE_ID: ray_node_id(),
        Tag.PID: str(os.getpid()),
        Tag.TRIAL_STATE: TrialState.RUNNING,
    }
    return tags, {}


def ray_node_id() -> str:
    """The Ray node this process runs on ('' outside Ray): hosts share a name when nodes share a machine."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def find_trial_run(client, experiment_id: str, parent_run_id: str, trial_id: str):
    """The child run of trial `trial_id` under `parent_run_id`, or None: the one definition of a
    trial's run, shared by the trial (find or create) and the driver (close, resume)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{Tag.TRIAL_ID} = '{trial_id}' and tags.`{Tag.PARENT_RUN}` = '{parent_run_id}'",
        max_results=1,
    )
    return runs[0] if runs else None


class MlflowRunLogger:
    """Logs to one MLflow run through MlflowClient (no global active run: safe with actor reuse).

    Round trips are what a reused worker's per-trial overhead is made of, so the logger keeps what it
    learnt from opening the run (its params, whether it completed) instead of asking the store again,
    and `log_batch` sends params, tags and metrics together.
    """

    def __init__(self, tracking_uri: str, run_id: str, client=None, opened=None, attempt: int = 1):
        from mlflow.tracking import MlflowClient

        self.client = client or MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        # The run as found when opened (None: ask the store); dropped at the first write but for params.
        self._opened = opened
        self._logged_params: dict[str, str] | None = None if opened is None else dict(opened.data.params)
        self._pending_metrics: list = []  # sent with the next call that writes to the run
        self._pending_lock = threading.Lock()
        self.attempt = attempt  # which attempt of the trial logs (Tag.ATTEMPT; `for_trial` numbers it)

    @classmethod
    def for_trial(cls, target: TrackingTarget, trial_id: str, run_name: str, record_attempt: bool = True):
        """Find the trial's child run under the parent (one search), or create it with every tag (one create).

        `record_attempt`: record this attempt (`attempt_record`, numbered after the one the run's tags name):
        on a new run the tags go with its creation and the metrics with its first write; on a run found
        unfinished, all in one call with the target's tags; a run found completed records none (it
        replays, trains not).
        """
        from mlflow.tracking import MlflowClient

        client = MlflowClient(target.tracking_uri)
        existing = find_trial_run(client, target.experiment_id, target.parent_run_id, trial_id)
        attempt = 1 if existing is None else int(existing.data.tags.get(Tag.ATTEMPT, "0")) + 1
        completed = existing is not None and existing.data.tags.get(Tag.TRIAL_STATE) == TrialState.COMPLETED
        attempt_tags, attempt_metrics = attempt_record(attempt) if record_attempt and not completed else ({}, {})
        metrics = _metric_entities({None: attempt_metrics})
        if existing is None:
            tags = {Tag.PARENT_RUN: target.parent_run_id, Tag.TRIAL_ID: trial_id, **dict(target.tags), **attempt_tags}
            run = client.create_run(target.experiment_id, tags=tags, run_name=run_name)
            logger = cls(target.tracking_uri, run.info.run_id, client, opened=run, attempt=attempt)
            logger._pending_metrics = metrics
            return logger
        client.update_run(existing.info.run_id, status="RUNNING")
        logger = cls(target.tracking_uri, existing.info.run_id, client, opened=existing, attempt=attempt)
        logger._log_batches(metrics=metrics, tags=_tag_entities({**dict(target.tags), **attempt_tags}))
        logger._opened = existing  # what it was before this attempt: completed_metrics() reads it
        return logger

    def log_params(self, params: dict) -> None:
        """Params the run does not have yet: a resumed trial's run has them already (an MLflow param never changes)."""
        self.log_batch(params=params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.log_metric_steps({step: metrics})

    def log_metric_steps(self, metrics_by_step: dict[int | None, dict[str, float]]) -> None:
        """Several steps' metrics in as few calls as MLflow's batch limit allows."""
        self._log_batches(metrics=_metric_entities(metrics_by_step))

    def log_batch(
        self,
        params: dict | None = None,
        tags: dict[str, str] | None = None,
        metrics_by_step: dict[int | None, dict[str, float]] | None = None,
    ) -> None:
        """Params (those the run lacks; a changed value is an error), tags and metrics in one round trip."""
        from mlflow.entities import Param

        new_params = []
        if params:
            from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

            logged = self._params_in_store()
            values = {k: str(v)[:MAX_PARAM_VAL_LENGTH] for k, v in _flatten(params).items()}
            changed = sorted(k for k, v in values.items() if logged.get(k, v) != v)
            if changed:
                raise ValueError(f"run {self.run_id} already has other values for params {changed}")
            new_params = [Param(k, v) for k, v in values.items() if k not in logged]
        self._log_batches(
            metrics=_metric_entities(metrics_by_step or {}), params=new_params, tags=_tag_entities(tags or {})
        )
        if self._logged_params is not None:
            self._logged_params.update((p.key, p.value) for p in new_params)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.send_pending()
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, dictionary: dict, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, dictionary, artifact_file)

    def log_datasets(self, splits: list[CorpusSplit]) -> None:
        """The splits as MLflow dataset inputs (the UI's Dataset column); a resumed run's are kept, not doubled."""
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.utils.validation import MAX_DATASET_DIGEST_SIZE

        inputs = [
            DatasetInput(
                Dataset(
                    name=s.name,
                    digest=s.content_hash[:MAX_DATASET_DIGEST_SIZE],
                    source_type="local",
                    source=json.dumps({"uri": s.data_dir}),
                    profile=json.dumps({"num_clips": s.num_clips, "speakers": list(s.speakers)}),
                ),
                tags=[InputTag(DatasetContext.TAG, s.split)],
            )
            for s in splits
        ]
        self._datasets = {s.split: (i.dataset.name, i.dataset.digest) for s, i in zip(splits, inputs)}
        for attempt in range(3):
            try:
                self.client.log_inputs(self.run_id, datasets=inputs)
                return
            except Exception as error:
                # Trials of one sweep log the same dataset (name and digest) at once: the store looks it up,
                # finds none, and the second insert breaks its unique key. Again, it finds the first's row.
                if attempt == 2 or "UNIQUE constraint failed: datasets" not in str(error):
                    raise
                time.sleep(0.2 * (attempt + 1))

    def log_figure(self, figure, artifact_file: str) -> None:
        import matplotlib.pyplot as plt

        self.send_pending()
        self.client.log_figure(self.run_id, figure, artifact_file)
        plt.close(figure)

    def log_artifacts(self, local_dir: str, artifact_path: str) -> None:
        self.send_pending()
        self.client.log_artifacts(self.run_id, local_dir, artifact_path)

    def log_model(
        self, model_dir: str, metrics: dict[str, float] | None = None, step: int | None = None, model_step: int = 0
    ) -> None:
        """The model as an MLflow Model named `model` (pyfunc, workers.finetune.serving), linked to this run,
        and its final `metrics` logged once (at `step`) and linked to it (MLflow 3: by `model_id`).

        `runs:/<run id>/model` then serves (`mlflow models serve`) and registers; the save_pretrained files
        are in its `transformers/` folder. The package's own code travels with it (code_paths), and the
        requirements are pinned to this process's versions instead of being inferred (which would load the
        model in a subprocess). The logged model's tags name its trial (run name, trial id, scenario, fold).

        A linked `<set>/...` metric carries the dataset input of split `<set>` (name and digest, as
        log_datasets logged it), and `train/clips` the train split's: the Models tab's "Datasets used" and
        its per-dataset metric columns come from these. `model_step` (the step the model was taken at) is the
        model's step on the run; MLflow links the run's metrics at that step to it too (the learning
        curves' values of that evaluation round).
        """
        import mlflow
        from mlflow.models import Model

        run = self.client.get_run(self.run_id)
        # Model.log finds the store and the model's experiment through the global URI and experiment.
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_experiment(experiment_id=run.info.experiment_id)
        self.send_pending()
        with tempfile.TemporaryDirectory(prefix="mlflow-model-") as staging:
            data = Path(staging) / Key.TRANSFORMERS_DIR
            data.symlink_to(Path(model_dir).resolve(), target_is_directory=True)
            warnings.filterwarnings("ignore", message=".*input example was not provided")  # a signature is
            info = Model.log(
                artifact_path=None,
                name=Key.MODEL_DIR,
                flavor=mlflow.pyfunc,
                run_id=self.run_id,
                loader_module="workers.finetune.serving",
                data_path=str(data),
                code_paths=[str(PACKAGE_DIR / "workers"), str(PACKAGE_DIR / "shards")],
                signature=model_signature(*serving_outputs(model_dir)),
                pip_requirements=serving_requirements(),
                tags=model_tags(run),
                step=model_step,
            )
        if metrics:
            self._log_batches(metrics=self._model_metrics(metrics, step, info.model_id))

    def _model_metrics(self, metrics: dict[str, float], step: int | None, model_id: str) -> list:
        """The final metrics as entities: the headline ones (Key.linked_to_model) carry the model's id and
        their split's dataset; the rest (per-emotion rows, timings) stay on the run, so the Models tab's
        columns are one short group per dataset, accuracy first."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entities = []
        # Linked ones first, accuracy first within each set: the Models tab orders columns as they were logged.
        for key, value in sorted(metrics.items(), key=lambda item: Key.model_column_order(item[0])):
            if not Key.linked_to_model(key):
                entities.append(Metric(key, float(value), now, step or 0))
                continue
            split = "train" if key == Key.TRAIN_CLIPS else key.split("/")[0]
            name, digest = self._datasets.get(split, (None, None))
            entities.append(
                Metric(key, float(value), now, step or 0, model_id=model_id, dataset_name=name, dataset_digest=digest)
            )
        return entities

    def set_tags(self, tags: dict[str, str]) -> None:
        self._log_batches(tags=_tag_entities(tags))

    def run_tags(self) -> dict[str, str]:
        return dict(self.client.get_run(self.run_id).data.tags)

    def completed_metrics(self) -> dict[str, float] | None:
        run = self._opened or self.client.get_run(self.run_id)
        if run.data.tags.get(Tag.TRIAL_STATE) != TrialState.COMPLETED:
            return None
        return dict(run.data.metrics)

    def send_pending(self) -> None:
        """Send what waits for the next write (a new run's attempt metric) now: the trial failed before."""
        self._log_batches()

    def _params_in_store(self) -> dict[str, str]:
        if self._logged_params is None:
            self._logged_params = dict(self.client.get_run(self.run_id).data.params)
        return self._logged_params

    def _log_batches(self, metrics=(), params=(), tags=()) -> None:
        """As few log_batch calls as MLflow's limits per call allow (params, tags and metrics share one)."""
        from mlflow.utils.validation import MAX_ENTITIES_PER_BATCH, MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

        with self._pending_lock:
            metrics, self._pending_metrics = [*self._pending_metrics, *metrics], []
        self._opened = None  # the run changes: from now on the store says what it holds
        params, tags = list(params), list(tags)
        while metrics or params or tags:
            call_params, params = params[:MAX_PARAMS_TAGS_PER_BATCH], params[MAX_PARAMS_TAGS_PER_BATCH:]
            call_tags, tags = tags[:MAX_PARAMS_TAGS_PER_BATCH], tags[MAX_PARAMS_TAGS_PER_BATCH:]
            room = min(MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH - len(call_params) - len(call_tags))
            call_metrics, metrics = metrics[:room], metrics[room:]
            self.client.log_batch(self.run_id, metrics=call_metrics, params=call_params, tags=call_tags)


_CLOCK = {"last_ms": 0}
_CLOCK_LOCK = threading.Lock()


def _timestamp_ms() -> int:
    """Now in ms, and strictly later than any earlier call's. MLflow's latest value of a metric is the one
    with the largest (step, timestamp, value): a final metric logged at the step of the curve's last point
    must come later in time, or the larger of the two values would win."""
    with _CLOCK_LOCK:
        _CLOCK["last_ms"] = max(int(time.time() * 1000), _CLOCK["last_ms"] + 1)
        return _CLOCK["last_ms"]


def _metric_entities(metrics_by_step: dict[int | None, dict[str, float]]) -> list:
    from mlflow.entities import Metric

    now = _timestamp_ms()
    return [
        Metric(k, float(v), now, step or 0) for step, metrics in metrics_by_step.items() for k, v in metrics.items()
    ]


def model_tags(run) -> dict[str, str]:
    """A logged model's tags: which trial it came from (the Models tab shows the model's name, `model`,
    and these), and the run's source instead of Ray's worker script."""
    tags = run.data.tags
    picked = {
        Tag.TRIAL_RUN: run.info.run_name or "",
        Tag.TRIAL_ID: tags.get(Tag.TRIAL_ID, ""),
        Tag.SCENARIO: tags.get(Tag.SCENARIO, ""),
        Tag.FOLD: tags.get(Tag.FOLD, ""),
        Tag.SWEEP: tags.get(Tag.SWEEP, ""),
        Tag.SOURCE_NAME: tags.get(Tag.SOURCE_NAME, ""),
        Tag.SOURCE_GIT_COMMIT: tags.get(Tag.SOURCE_GIT_COMMIT, ""),
    }
    return {k: v for k, v in picked.items() if v}


def _tag_entities(tags: dict[str, str]) -> list:
    from mlflow.entities import RunTag

    return [RunTag(k, str(v)) for k, v in tags.items()]


PACKAGE_DIR = Path(__file__).resolve().parents[2]  # holds workers/ and shards/, the code a model needs
SERVING_PACKAGES = ("torch", "transformers", "safetensors", "huggingface_hub", "peft", "numpy", "pandas")


def labels_of(model_dir: str) -> list[str]:
    """The class names of a saved model, in logit order (its config's id2label)."""
    id2label = json.loads((Path(model_dir) / "config.json").read_text())["id2label"]
    return [id2label[str(i)] for i in range(len(id2label))]


def serving_outputs(model_dir: str) -> tuple[list[str], list[str]]:
    """(the labels the served model answers probabilities for, the dimensions it answers values for): a
    dimensional model (task 'dimensions') answers values only, a categorical one probabilities only."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    dimensions = list(config.get("dimensions") or [])
    return ([] if dimensions and config.get("task") == Task.DIMENSIONS else labels_of(model_dir)), dimensions


def model_signature(labels: list[str], dimensions: list[str] | tuple[str, ...] = ()):
    """Audio in (a column of float arrays, 16 kHz); the label and one probability per label out, and one
    value per dimension for a dimensional model (no label column when it answers values only)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import Array

    inputs = Schema([ColSpec(Array(DataType.double), ServingColumn.AUDIO)])
    label = [ColSpec(DataType.string, ServingColumn.LABEL)] if labels else []
    outputs = Schema([*label, *(ColSpec(DataType.double, name) for name in (*labels, *dimensions))])
    return ModelSignature(inputs=inputs, outputs=outputs)


def serving_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pinned = []
    for package in SERVING_PACKAGES:
        try:
            pinned.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return pinned


def download_model(artifact_uri: str, destination: Path, tracking_uri: str | None) -> Path:
    """Fetch a model artifact (`runs:/<run id>/model`, `models:/...`) into the directory `destination`;
    returns the model's directory (`destination/model` for `runs:/.../model`, `destination` for `models:/`)."""
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)  # runs:/ finds a run's logged model through the global URI (MLflow 3.17)
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=artifact_uri, dst_path=str(destination), tracking_uri=tracking_uri
        )
    )


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
