"""What a researcher finds in the MLflow UI after a sweep (issue 25), read back through the MLflow client
from a real finished smoke sweep: no timestamp or counter metrics; every logged model has the held-out
accuracies and its datasets linked to it and names its trial; the parent holds the sweep's fixed values
and search space; run names carry the trial index and what it varies; run notes name the held-out
speakers; learning curves are their own `curve/` charts with the training step as step."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from sweep_stores import finished_smoke_sweep

from orchestrator import run_notes
from orchestrator.grid import Variant
from workers.core.reporting import ListReporter
from workers.payload import TrackingTarget, TrialPayload
from workers.trial import open_logger, run_recorded
from workers.vocabulary import Key, Tag

pytestmark = pytest.mark.slow

TIMESTAMP_FLOOR = 1e9  # epoch seconds since 2001: no metric of a trial is that large


@pytest.fixture(scope="module")
def smoke_store(demo_dir, tmp_path_factory):
    uri, parent_id, _ = finished_smoke_sweep(demo_dir, tmp_path_factory.mktemp("smoke_sweep"))
    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    runs = client.search_runs([parent.info.experiment_id], filter_string=f"tags.`{Tag.PARENT_RUN}` = '{parent_id}'")
    models = client.search_logged_models([parent.info.experiment_id])
    return client, parent, runs, models


def test_no_run_or_model_has_a_timestamp_or_counter_metric(smoke_store):
    client, parent, runs, models = smoke_store
    assert runs and models
    for run in [parent, *runs]:
        assert run.data.tags[Tag.ATTEMPT if run is not parent else Tag.SWEEP]
        for key, value in run.data.metrics.items():
            assert value < TIMESTAMP_FLOOR, f"{run.info.run_name}: {key}={value} looks like a timestamp"
            assert "started_at" not in key and "attempt" not in key, key
    for run in runs:
        assert float(run.data.tags[Tag.STARTED_AT]) > TIMESTAMP_FLOOR  # the timestamp is a tag
        assert run.data.tags[Tag.attempt_started(1)] == run.data.tags[Tag.STARTED_AT]
    for model in models:
        assert all(m.value < TIMESTAMP_FLOOR for m in model.metrics), [m.key for m in model.metrics]


def test_each_logged_model_has_its_held_out_accuracy_and_datasets_linked_and_names_its_trial(smoke_store):
    client, parent, runs, models = smoke_store
    by_run = {run.info.run_id: run for run in runs}
    assert sorted(m.source_run_id for m in models) == sorted(by_run), "one logged model per trial"
    for model in models:
        run = by_run[model.source_run_id]
        linked = {m.key: m for m in model.metrics}
        for name in ("test_en", "test_zh", "val"):
            metric = linked[f"{name}/accuracy"]
            assert metric.value == pytest.approx(run.data.metrics[f"{name}/accuracy"])
            assert metric.model_id == model.model_id
        inputs = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
        used = {(m.dataset_name, m.dataset_digest) for m in model.metrics if m.dataset_name}
        assert used == set(inputs.items()), "train, val and both test sets are the model's datasets"
        first_of_set = [m.key for m in model.metrics if m.dataset_name and m.dataset_name.endswith("test_en: 0015")]
        assert first_of_set[0] == "test_en/accuracy", "the Models tab's first test_en column"
        assert not [k for k in linked if k.count("/") == 2], "per-emotion rows stay on the run"
        test_en = linked["test_en/accuracy"]
        assert test_en.dataset_name.endswith("test_en: 0015"), test_en.dataset_name
        assert linked[Key.TRAIN_CLIPS].dataset_name.endswith("train: 0011,0012,0013,0014")
        assert model.name == Key.MODEL_DIR  # `runs:/<run id>/model` keeps resolving
        assert model.tags[Tag.TRIAL_RUN] == run.info.run_name
        assert model.tags[Tag.TRIAL_ID] == run.data.tags[Tag.TRIAL_ID]
        assert model.tags[Tag.SOURCE_NAME] == "python -m orchestrator.sweep"
    # The Models tab can rank by held-out accuracy: the store orders models by the linked metric.
    ranked = client.search_logged_models(
        [parent.info.experiment_id], order_by=[{"field_name": "metrics.test_en/accuracy", "ascending": False}]
    )
    values = [next(m.value for m in model.metrics if m.key == "test_en/accuracy") for model in ranked]
    assert values == sorted(values, reverse=True)


def test_final_metrics_are_logged_once(smoke_store):
    client, _, runs, _ = smoke_store
    for run in runs:
        for key in ("val/accuracy", "test_en/accuracy", "trial_seconds"):
            assert len(client.get_metric_history(run.info.run_id, key)) == 1, key


def test_the_parent_holds_the_sweeps_fixed_values_search_space_table_and_command(smoke_store):
    _, parent, runs, _ = smoke_store
    params = parent.data.params
    assert params["search_space.learning_rate"] == "grid_search([0.001, 0.002])"
    assert params["batch_size"] == "8" and params["train_speakers"] == "0011,0012,0013,0014"
    # --set schedule=full fixed what the sweep searched: a fixed value now, out of the search space
    assert params["schedule"] == "full" and "search_space.schedule" not in params
    assert "learning_rate" not in params  # varied: not a fixed value
    assert parent.info.run_name.startswith("smoke ")  # the sweep and its start time
    note = parent.data.tags[Tag.NOTE]
    ranked_names = [line.split("]")[0].lstrip("| [") for line in note.splitlines() if line.startswith("| [")]
    assert sorted(ranked_names) == sorted(r.info.run_name for r in runs)
    accuracies = [float(line.split("|")[3]) for line in note.splitlines() if line.startswith("| [")]
    assert accuracies == sorted(accuracies, reverse=True), "best first by val/accuracy"
    # (the command is the driver's argv: here pytest's, from a shell `python -m orchestrator.sweep smoke ...`)
    assert f"git checkout {parent.data.tags[Tag.GIT_COMMIT]} && python -m orchestrator.sweep" in note


def test_run_names_and_notes_say_what_each_trial_is(smoke_store):
    _, _, runs, _ = smoke_store
    for run in runs:
        index = run.data.tags[Tag.TRIAL_ID].rsplit("_", 1)[-1]
        learning_rate = float(run.data.params["learning_rate"])
        expected = f"{index} lr={run_notes.short_value(learning_rate)} smoke"
        assert run.info.run_name == expected
        note = run.data.tags[Tag.NOTE]
        assert "speakers 0011, 0012, 0013, 0014" in note
        assert "`test_en`: speaker 0015" in note and "`test_zh`: speaker 0002" in note
        assert "`confusion_matrix_test_en.png`" in note


def test_variant_labels_and_the_runs_view_url():
    variant = Variant("mixed", {"learning_rate": 0.002, "schedule": "full", "english_fraction": 0.5}, fold="2")
    label = run_notes.variant_label(variant, ["learning_rate", "schedule", "english_fraction"])
    assert label == "lr=2e-3 full en=0.5 mixed fold 2"
    lines = run_notes.ui_lines("sqlite:////x/mlruns/mlflow.db", "7")
    assert lines[-1].endswith("http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning")
    (url,) = run_notes.ui_lines("http://10.0.0.5:5000/", "7")[1:]
    assert url.strip() == "http://10.0.0.5:5000/#/experiments/7/runs?workflowType=machine_learning"


def test_learning_curves_are_curve_charts_stepped_by_training_step(demo_dir, tmp_path, tracking_uri):
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("curves", artifact_location=(tmp_path / "artifacts").as_uri())
    parent_id = client.create_run(experiment_id).info.run_id
    target = {"tracking_uri": tracking_uri, "experiment_id": experiment_id, "parent_run_id": parent_id, "tags": []}
    values = dict(
        data_dir=str(demo_dir),
        train_speakers=("0011", "0012"),
        eval_sets={"test_en": ("0015",)},
        val_fraction=0.25,
        stages=({"trainable": "head", "epochs": 1, "learning_rate": 1e-3, "batch_size": 4},),
        eval_every_steps=4,
        feature_cache_dir=str(tmp_path / "features"),
        num_threads=1,
    )
    payload = TrialPayload(values, {}, TrackingTarget.from_dict(target))
    final = run_recorded(payload, open_logger(payload, "t_00007", "00007 head"), ListReporter())
    (run,) = client.search_runs([experiment_id], filter_string="tags.trial_id = 't_00007'")
    curve = client.get_metric_history(run.info.run_id, Key.curve("val/loss"))
    assert [m.step for m in curve] == [4, 8, 12]  # every evaluation round, at its training step
    for key in ("train/loss", "train/lr", "val/accuracy"):
        assert len(client.get_metric_history(run.info.run_id, Key.curve(key))) == 3
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/loss")] == [final["step"]]
    assert not [k for k in run.data.metrics if k.startswith(("train/", "trial/")) and k != Key.TRAIN_CLIPS]
