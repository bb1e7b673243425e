"""MLflow stores for the report and predict tests.

- `finished_smoke_sweep`: a real tiny smoke sweep (local Ray, demo corpus, real trials), run once
  per test session and shared by test_report and test_predict.
- `synthetic_sweep`: parent and child runs written straight through MlflowClient, with metrics
  computed by workers.core.metrics from made-up predictions, for sweep shapes a tiny CPU sweep cannot
  produce in seconds (transfer_zh, folds, partial sweeps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from shards.schema import EMOTIONS
from workers.core.metrics import classification_metrics, confusion, confusion_figure
from workers.vocabulary import Tag

_FINISHED: dict[str, tuple] = {}


def finished_smoke_sweep(demo_dir: Path, root: Path) -> tuple[str, str, Path]:
    """(tracking URI, parent run id, Tune storage dir) of one real finished smoke sweep (2 trials)."""
    if "smoke" not in _FINISHED:
        from orchestrator import sweep

        uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
        storage = root / "ray"
        code = sweep.main(
            [
                "smoke",
                "--data",
                str(demo_dir),
                "--tracking-uri",
                uri,
                "--storage",
                str(storage),
                "--set",
                "schedule=full",
                "--set",
                "epoch_scale=0.25",
            ]
        )
        assert code == 0
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("smoke")
        parents = [r for r in client.search_runs([experiment.experiment_id]) if Tag.PARENT_RUN not in r.data.tags]
        _FINISHED["smoke"] = (uri, parents[0].info.run_id, storage)
    return _FINISHED["smoke"]


@dataclass
class FakeTrial:
    trial_id: str
    params: dict[str, object]
    accuracy: dict[str, float]  # set -> accuracy the made-up predictions reach
    status: str = "FINISHED"
    tags: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    with_figures: bool = False


def synthetic_sweep(
    uri: str,
    sweep_name: str,
    trials: list[FakeTrial],
    parent_status: str = "FINISHED",
    experiment: str | None = None,
    parent_tags: dict[str, str] | None = None,
) -> str:
    """Write a parent run (with `parent_tags` besides the basic ones) and its trial runs; returns the parent run id."""
    client = MlflowClient(uri)
    experiment_name = experiment or sweep_name
    found = client.get_experiment_by_name(experiment_name)
    experiment_id = (
        found.experiment_id
        if found
        else client.create_experiment(
            experiment_name,
            artifact_location=(Path(uri.removeprefix("sqlite:///")).parent / "artifacts" / experiment_name).as_uri(),
        )
    )
    common = {"sweep": sweep_name, "data_hash": "f" * 64, "git_commit": "0" * 40}
    parent = client.create_run(
        experiment_id,
        run_name=f"{sweep_name}-synthetic",
        tags={**common, "command": f"python -m orchestrator.sweep {sweep_name}", **(parent_tags or {})},
    )
    parent_id = parent.info.run_id
    add_trials(uri, parent_id, trials)
    if parent_status != "RUNNING":
        client.set_terminated(parent_id, parent_status)
    return parent_id


def add_trials(uri: str, parent_id: str, trials: list[FakeTrial]) -> None:
    """Write `trials` as child runs of the parent run `parent_id` (synthetic, or one the driver opened)."""
    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    experiment_id = parent.info.experiment_id
    common = {key: parent.data.tags[key] for key in ("sweep", "data_hash", "git_commit") if key in parent.data.tags}
    for number, trial in enumerate(trials):
        tags = {Tag.PARENT_RUN: parent_id, Tag.TRIAL_ID: trial.trial_id, **common, **trial.tags}
        run_id = client.create_run(experiment_id, run_name=f"train_emotion_{trial.trial_id}", tags=tags).info.run_id
        params = {
            "learning_rate": 1e-4,
            "batch_size": 8,
            "schedule": "paper_finer",
            "english_fraction": None,
            "start": "tiny",
            "seed": 0,
            "data_dir": "/data",
            "eval_sets.test_en": ("0015",),
            "eval_sets.test_zh": ("0002",),
            **trial.params,
        }
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
        metrics = {}
        for set_name, accuracy in trial.accuracy.items():
            y_true, y_pred = _predictions(accuracy, seed=number * 31 + len(set_name))
            metrics.update(classification_metrics(set_name, y_true, y_pred))
            metrics[f"{set_name}/loss"] = 1.6 * (1.0 - accuracy) + 0.1
            metrics[f"{set_name}/ece"] = 0.05 + 0.1 * (1.0 - accuracy)
            if trial.with_figures and set_name != "val":
                client.log_figure(
                    run_id,
                    confusion_figure(confusion(y_true, y_pred), f"{set_name} (n={len(y_true)})"),
                    f"confusion_matrix_{set_name}.png",
                )
        client.log_batch(run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()])
        if trial.error:
            client.set_tag(run_id, "error", trial.error)
        if trial.status != "RUNNING":
            client.set_terminated(run_id, trial.status)


def _predictions(accuracy: float, seed: int, per_class: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions that are right for `accuracy` of the clips, wrong in a varied way otherwise."""
    rng = np.random.default_rng(seed)
    y_true = np.repeat(np.arange(len(EMOTIONS)), per_class)
    y_pred = y_true.copy()
    wrong = rng.choice(len(y_true), size=int(round((1 - accuracy) * len(y_true))), replace=False)
    y_pred[wrong] = (y_true[wrong] + rng.integers(1, len(EMOTIONS), size=len(wrong))) % len(EMOTIONS)
    return y_true, y_pred


def transfer_shaped(uri: str) -> str:
    """transfer_zh: zero-shot and Mandarin-only references, a mixed curve over the English fraction,
    one trial still running and one failed."""
    trials = [
        FakeTrial(
            "zs_0",
            {"english_fraction": None},
            {"val": 0.95, "test_en": 0.90, "test_zh": 0.32},
            tags={"scenario": "zero_shot"},
            with_figures=True,
        ),
        FakeTrial(
            "zh_0",
            {"english_fraction": None, "learning_rate": 1e-4},
            {"val": 0.90, "test_en": 0.45, "test_zh": 0.34},
            tags={"scenario": "zh_only"},
            with_figures=True,
        ),
        FakeTrial(
            "zh_1",
            {"english_fraction": None, "learning_rate": 3e-4},
            {"val": 0.85, "test_en": 0.40, "test_zh": 0.36},
            tags={"scenario": "zh_only"},
        ),
    ]
    curve = {0.0: (0.36, 0.50), 0.25: (0.55, 0.75), 0.5: (0.60, 0.84), 0.75: (0.52, 0.88)}
    for k, (fraction, (zh, en)) in enumerate(curve.items()):
        for j, learning_rate in enumerate((1e-4, 3e-4)):
            shift = 0.03 * j
            trials.append(
                FakeTrial(
                    f"mix_{k}{j}",
                    {"english_fraction": fraction, "learning_rate": learning_rate},
                    {"val": 0.8 + 0.15 * zh - shift, "test_en": en - shift, "test_zh": zh - shift},
                    tags={"scenario": "mixed"},
                    with_figures=(k, j) == (2, 0),
                )
            )
    trials.append(
        FakeTrial("mix_run", {"english_fraction": 0.9}, {"val": 0.7}, status="RUNNING", tags={"scenario": "mixed"})
    )
    trials.append(
        FakeTrial(
            "mix_fail",
            {"english_fraction": 1.0},
            {},
            status="FAILED",
            tags={"scenario": "mixed"},
            error='Traceback (most recent call last):\n  File "recipe.py", line 1\n'
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        )
    )
    return synthetic_sweep(uri, "transfer_zh", trials)


def fold_shaped(uri: str) -> str:
    """Two configurations x three folds (tags fold and config_id), one fold failed."""
    trials = []
    speakers = {1: ("0011", "0012"), 2: ("0013", "0014"), 3: ("0015", "0016")}
    for c, learning_rate in enumerate((1e-4, 3e-4)):
        for fold in (1, 2, 3):
            failed = (c, fold) == (1, 3)
            trials.append(
                FakeTrial(
                    f"c{c}_f{fold}",
                    {"learning_rate": learning_rate, "train_speakers": speakers[fold]},
                    {} if failed else {"val": 0.8 + 0.05 * c + 0.01 * fold, "test_en": 0.6 + 0.1 * c - 0.05 * fold},
                    status="FAILED" if failed else "FINISHED",
                    tags={"fold": str(fold), "config_id": f"cfg{c}"},
                    error="ValueError: speaker 0099 is not in /data" if failed else None,
                )
            )
    return synthetic_sweep(uri, "emobox_folds", trials)


def source_mixed(uri: str, parent_tags: dict[str, str] | None = None, sweep_name: str = "mix_zh") -> str:
    """A sweep that mixes through `source_fraction` (mix_source zh): an English-only reference first, then
    a curve over the Mandarin share (Mandarin rises with it, English falls)."""
    return synthetic_sweep(uri, sweep_name, source_mixed_trials(), parent_tags=parent_tags)


def source_mixed_trials() -> list[FakeTrial]:
    reference = {"source_fraction": None, "mix_source": "zh"}
    trials = [
        FakeTrial("en_0", reference, {"val": 0.90, "test_en": 0.85, "test_zh": 0.30}, tags={"scenario": "en_only"})
    ]
    for k, fraction in enumerate((0.2, 0.5, 0.8)):
        trials.append(
            FakeTrial(
                f"mix_{k}",
                {"source_fraction": fraction, "mix_source": "zh"},
                {"val": 0.8, "test_en": 0.80 - 0.3 * fraction, "test_zh": 0.35 + 0.4 * fraction},
                tags={"scenario": "mixed"},
            )
        )
    return trials
