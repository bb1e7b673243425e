"""Where a trial's numbers go: a small logger interface, and its MLflow implementation.

The training loop only sees `RunLogger`; it never names MLflow. This is the one module on the
worker side that imports mlflow (lazily: the driver imports it cheaply).
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from workers.vocabulary import DatasetContext, Key, Tag, TrialState


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
    def log_params(self, params: dict) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_dict(self, dictionary: dict, artifact_file: str) -> None: ...
    def log_figure(self, figure, artifact_file: str) -> None: ...
    def log_artifacts(self, local_dir: str, artifact_path: str) -> None: ...
    def log_model(self, model_dir: str) -> None:
        """A saved model directory (workers.checkpoint) as the run's MLflow Model `model/`."""

    def set_tags(self, tags: dict[str, str]) -> None: ...
    def run_tags(self) -> dict[str, str]:
        """The tags the run holds now (a retried trial's run holds its earlier attempts' tags)."""

    def log_datasets(self, splits: list[CorpusSplit]) -> None: ...
    def completed_metrics(self) -> dict[str, float] | None:
        """The metrics of a run already marked completed (Tag.TRIAL_STATE), else None."""


class NullLogger:
    """For runs outside a sweep (tests, benchmarks)."""

    def log_params(self, params: dict) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_dict(self, dictionary: dict, artifact_file: str) -> None: ...
    def log_artifacts(self, local_dir: str, artifact_path: str) -> None: ...
    def log_model(self, model_dir: str) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_datasets(self, splits: list[CorpusSplit]) -> None: ...

    def run_tags(self) -> dict[str, str]:
        return {}

    def completed_metrics(self) -> dict[str, float] | None:
        return None  # nothing is recorded, so nothing ever completed

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
        filter_string=f"tags.{Tag.TRIAL_ID} = '{trial_id}' and tags.`{Tag.PARENT_RUN}` = '{parent_run_id}'",
        max_results=1,
    )
    return runs[0] if runs else None


class MlflowRunLogger:
    """Logs to one MLflow run through MlflowClient (no global active run: safe with actor reuse)."""

    def __init__(self, tracking_uri: str, run_id: str):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
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
            tags = {Tag.PARENT_RUN: target.parent_run_id, Tag.TRIAL_ID: trial_id, **dict(target.tags)}
            run_id = client.create_run(target.experiment_id, tags=tags, run_name=run_name).info.run_id
        return cls(target.tracking_uri, run_id)

    def log_params(self, params: dict) -> None:
        """Params the run does not have yet: a resumed trial's run has them already (an MLflow param never changes)."""
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        logged = self.client.get_run(self.run_id).data.params
        values = {k: str(v)[:MAX_PARAM_VAL_LENGTH] for k, v in _flatten(params).items()}
        changed = sorted(k for k, v in values.items() if logged.get(k, v) != v)
        if changed:
            raise ValueError(f"run {self.run_id} already has other values for params {changed}")
        self._log_batches(params=[Param(k, v) for k, v in values.items() if k not in logged])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.log_metric_steps({step: metrics})

    def log_metric_steps(self, metrics_by_step: dict[int | None, dict[str, float]]) -> None:
        """Several steps' metrics in as few calls as MLflow's batch limit allows."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step or 0) for step, metrics in metrics_by_step.items() for k, v in metrics.items()
        ]
        self._log_batches(metrics=items)

    def log_text(self, text: str, artifact_file: str) -> None:
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
        self.client.log_inputs(self.run_id, datasets=inputs)

    def log_figure(self, figure, artifact_file: str) -> None:
        import matplotlib.pyplot as plt

        self.client.log_figure(self.run_id, figure, artifact_file)
        plt.close(figure)

    def log_artifacts(self, local_dir: str, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, local_dir, artifact_path)

    def log_model(self, model_dir: str) -> None:
        """The model as an MLflow Model named `model` (pyfunc, workers.serving), linked to this run.

        `runs:/<run id>/model` then serves (`mlflow models serve`) and registers; the save_pretrained files
        are in its `transformers/` folder. The package's own code travels with it (code_paths), and the
        requirements are pinned to this process's versions instead of being inferred (which would load the
        model in a subprocess).
        """
        import mlflow
        from mlflow.models import Model

        # Model.log finds the store and the model's experiment through the global URI and experiment.
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_experiment(experiment_id=self.client.get_run(self.run_id).info.experiment_id)
        with tempfile.TemporaryDirectory(prefix="mlflow-model-") as staging:
            data = Path(staging) / Key.TRANSFORMERS_DIR
            data.symlink_to(Path(model_dir).resolve(), target_is_directory=True)
            warnings.filterwarnings("ignore", message=".*input example was not provided")  # a signature is
            Model.log(
                artifact_path=None,
                name=Key.MODEL_DIR,
                flavor=mlflow.pyfunc,
                run_id=self.run_id,
                loader_module="workers.serving",
                data_path=str(data),
                code_paths=[str(PACKAGE_DIR / "workers"), str(PACKAGE_DIR / "shards")],
                signature=model_signature(labels_of(model_dir)),
                pip_requirements=serving_requirements(),
            )

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self._log_batches(tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def run_tags(self) -> dict[str, str]:
        return dict(self.client.get_run(self.run_id).data.tags)

    def completed_metrics(self) -> dict[str, float] | None:
        run = self.client.get_run(self.run_id)
        if run.data.tags.get(Tag.TRIAL_STATE) != TrialState.COMPLETED:
            return None
        return dict(run.data.metrics)

    def _log_batches(self, metrics=(), params=(), tags=()) -> None:
        """One log_batch call per slice within MLflow's limits per call."""
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

        for name, items, limit in (
            ("metrics", metrics, MAX_METRICS_PER_BATCH),
            ("params", params, MAX_PARAMS_TAGS_PER_BATCH),
            ("tags", tags, MAX_PARAMS_TAGS_PER_BATCH),
        ):
            for start in range(0, len(items), limit):
                self.client.log_batch(self.run_id, **{name: items[start : start + limit]})


PACKAGE_DIR = Path(__file__).resolve().parent.parent  # holds workers/ and shards/, the code a model needs
SERVING_PACKAGES = ("torch", "transformers", "safetensors", "huggingface_hub", "peft", "numpy", "pandas")


def labels_of(model_dir: str) -> list[str]:
    """The class names of a saved model, in logit order (its config's id2label)."""
    id2label = json.loads((Path(model_dir) / "config.json").read_text())["id2label"]
    return [id2label[str(i)] for i in range(len(id2label))]


def model_signature(labels: list[str]):
    """Audio in (a column of float arrays, 16 kHz), the label and one probability per label out."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import Array

    from workers.serving import AUDIO_COLUMN, LABEL_COLUMN

    inputs = Schema([ColSpec(Array(DataType.double), AUDIO_COLUMN)])
    outputs = Schema([ColSpec(DataType.string, LABEL_COLUMN), *(ColSpec(DataType.double, name) for name in labels)])
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


def download_model(artifact_uri: str, destination: Path, tracking_uri: str | None) -> None:
    """Fetch a model artifact (`runs:/<run id>/model`, `models:/...`) into the directory `destination`."""
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)  # runs:/ finds a run's logged model through the global URI (MLflow 3.17)
    mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(destination), tracking_uri=tracking_uri)


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
