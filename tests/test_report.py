"""The sweep report on a real finished tiny sweep and on synthetic transfer, fold and partial sweeps."""

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from sweep_stores import FakeTrial, finished_smoke_sweep, fold_shaped, synthetic_sweep, transfer_shaped

from orchestrator import report

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_sweep(demo_dir, local_ray, tmp_path_factory):
    return finished_smoke_sweep(demo_dir, tmp_path_factory.mktemp("smoke_sweep"))


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    MlflowClient(uri).search_experiments()  # create the database
    return uri


def artifact_paths(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_finished_smoke_sweep_report_has_the_papers_tables_and_is_logged_to_the_parent(smoke_sweep, tmp_path, capsys):
    uri, parent_id, _ = smoke_sweep
    out = tmp_path / "report"
    assert report.main(["smoke", "--tracking-uri", uri, "--out", str(out)]) == 0

    markdown = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert "Best configuration per scenario" in markdown
    assert "ranked by `val/accuracy`" in markdown and "never take part in the choice" in markdown
    assert "|  | Precision | Recall | F1-score | Support |" in markdown
    for row in ("Accuracy", "Macro avg", "Weighted avg"):
        assert f"| {row} |" in markdown
    assert "#### test_en (held-out speakers 0015)" in markdown and "#### test_zh (held-out speakers 0002)" in markdown
    assert "How the tuned knobs relate to the metric" in markdown and "`learning_rate`" in markdown
    # Every image the Markdown names exists; the HTML carries them inline.
    images = re.findall(r"\]\((images/[^)]+)\)", markdown)
    assert any("confusion_matrix_test_en" in i for i in images) and any("reliability_test_zh" in i for i in images)
    assert "images/knobs.png" in images
    assert all((out / image).stat().st_size > 5_000 for image in images)
    assert html.count("data:image/png;base64,") == len(images) and 'src="images/' not in html

    client = MlflowClient(uri)
    logged = artifact_paths(client, parent_id)
    assert {"report/report.html", "report/report.md", "report/images/knobs.png"} <= logged
    assert f"logged to parent run {parent_id}" in capsys.readouterr().out


def test_paper_table_numbers_are_the_selected_runs_metrics(smoke_sweep, tmp_path):
    uri, parent_id, _ = smoke_sweep
    from orchestrator import results as runs

    client = runs.connect(uri)
    sweep = runs.load_sweep(client, runs.find_parent(client, parent_id))
    selected = runs.best(sweep.trials)
    assert selected.metric("val/accuracy") == max(t.metric("val/accuracy") for t in sweep.trials)
    table = report.paper_table(selected, "test_en")
    rows = {row[0]: row[1:] for row in table.rows}
    assert rows["Accuracy"] == ["", "", f"{selected.metric('test_en/accuracy'):.2f}", "30"]
    assert rows["Angry"] == [f"{selected.metric(f'test_en/Angry/{m}'):.2f}" for m in ("precision", "recall", "f1")] + [
        "6"
    ]
    assert rows["Macro avg"][1] == f"{selected.metric('test_en/uar'):.2f}"  # macro recall is UAR
    assert rows["Weighted avg"][2] == f"{selected.metric('test_en/weighted_f1'):.2f}"


def test_trials_log_calibration_for_every_held_out_set(smoke_sweep):
    uri, parent_id, _ = smoke_sweep
    client = MlflowClient(uri)
    children = client.search_runs(
        [client.get_run(parent_id).info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    for child in children:
        for set_name in ("val", "test_en", "test_zh"):
            assert 0.0 <= child.data.metrics[f"{set_name}/ece"] <= 1.0
            assert f"reliability_{set_name}.png" in {a.path for a in client.list_artifacts(child.info.run_id)}


def test_a_trial_run_id_reports_on_its_sweep(smoke_sweep, tmp_path, capsys):
    uri, parent_id, _ = smoke_sweep
    client = MlflowClient(uri)
    child = client.search_runs(
        [client.get_run(parent_id).info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )[0]
    assert report.main([child.info.run_id, "--tracking-uri", uri, "--out", str(tmp_path), "--no-log"]) == 0
    assert parent_id in capsys.readouterr().err
    assert parent_id in (tmp_path / "report.md").read_text()


def test_transfer_sweep_plots_both_languages_against_the_english_fraction(store, tmp_path):
    parent_id = transfer_shaped(store)
    out = tmp_path / "report"
    assert report.main([parent_id, "--tracking-uri", store, "--out", str(out)]) == 0
    markdown = (out / "report.md").read_text()
    assert "## Transfer to Mandarin: English fraction" in markdown
    assert (out / "images" / "transfer_english_fraction.png").stat().st_size > 10_000
    section = markdown.split("## Transfer to Mandarin")[1].split("\n## ")[0]
    fractions = re.findall(r"^\| ([\d.]+) \| \d+ \|", section, flags=re.M)
    assert fractions == ["0", "0.25", "0.5", "0.75"]  # 0.9 is still running, 1.0 failed; "None" are references
    assert "| zero_shot (reference) | 1 | zs_0 |" in section and "| zh_only (reference) | 2 | zh_0 |" in section
    # Selection is on validation: mix_30 has the best test_en of the mixed runs but not the best val.
    assert re.search(r"^\| mixed \| 8/10 \| mix_20 \|", markdown, flags=re.M)
    assert "mix_fail FAILED" in markdown and "mix_run RUNNING" in markdown
    assert "CUDA out of memory" in markdown
    assert "report/images/transfer_english_fraction.png" in artifact_paths(MlflowClient(store), parent_id)


def test_fold_sweep_shows_mean_and_std_per_configuration(store, tmp_path):
    parent_id = fold_shaped(store)
    assert report.main([parent_id, "--tracking-uri", store, "--out", str(tmp_path)]) == 0
    markdown = (tmp_path / "report.md").read_text()
    section = markdown.split("## Folds: mean and spread per configuration")[1].split("\n## ")[0]
    assert "| cfg0 | 0.0001 | 3/3 | 0.820 ± 0.010 | 0.500 ± 0.050 |" in section
    assert "| cfg1 | 0.0003 | 2/3 | 0.865 ± 0.007 | 0.625 ± 0.035 |" in section
    # cfg1's mean is higher, but over 2 of its 3 folds (one failed): only complete fold sets rank (issue 21)
    assert "Best configuration by mean `val/accuracy` over folds: **cfg0**" in section
    assert (tmp_path / "images" / "folds.png").stat().st_size > 10_000
    assert "speaker 0099 is not in /data" in markdown


def test_sweep_with_nothing_finished_still_reports_what_runs(store, tmp_path):
    trials = [
        FakeTrial("t0", {"learning_rate": 1e-4}, {"val": 0.5}, status="RUNNING"),
        FakeTrial("t1", {"learning_rate": 3e-4}, {}, status="FAILED", error="RuntimeError: boom"),
    ]
    parent_id = synthetic_sweep(store, "smoke", trials, parent_status="RUNNING")
    assert report.main([parent_id, "--tracking-uri", store, "--out", str(tmp_path)]) == 0
    markdown = (tmp_path / "report.md").read_text()
    assert "parent status **RUNNING**" in markdown and "2 of 2 trial(s) are not finished" in markdown
    assert "| smoke | 0/2 | none finished |" in markdown
    assert "No finished trial yet" in markdown
    assert "| – | t1 | FAILED | 0.0003 |" in markdown and "RuntimeError: boom" in markdown


def test_a_sweep_without_trials_is_one_clear_line(store, tmp_path, capsys):
    parent_id = synthetic_sweep(store, "smoke", [])
    assert report.main(["smoke", "--tracking-uri", store, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"report: run {parent_id} (sweep smoke, FINISHED) has no trial runs; nothing to report"
    assert not (tmp_path / "report.md").exists()


def test_unknown_sweep_is_a_usage_error_naming_the_experiments_there(store, capsys):
    synthetic_sweep(store, "transfer_zh", [])
    with pytest.raises(SystemExit) as exited:
        report.main(["nope", "--tracking-uri", store])
    assert exited.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert line.startswith("python -m orchestrator.report: error: no sweep or run 'nope'")
    assert "experiments there: " in line and "transfer_zh" in line


def test_missing_store_is_not_created(tmp_path, capsys):
    database = tmp_path / "nowhere" / "mlflow.db"
    assert report.main(["smoke", "--tracking-uri", f"sqlite:///{database}"]) == 1
    assert f"no MLflow store at {database}" in capsys.readouterr().err
    assert not database.exists()


def test_unreachable_server_is_one_line_without_traceback():
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "PYTHONPATH": str(Path(report.__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.report", "smoke", "--tracking-uri", f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"report: cannot reach the MLflow store at http://127.0.0.1:{port}")
    assert "Traceback" not in done.stderr


def test_a_sweep_is_recorded_as_mlflow_users_know_it(smoke_sweep, demo_dir):
    """Model-training experiment, MLflow's source tags, the corpus splits as dataset inputs, JSON reports."""
    import json

    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE

    uri, parent_id, _ = smoke_sweep
    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert children
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(report.__file__).parent
    )
    for run in [parent, *children]:
        tags = run.data.tags
        assert tags[MLFLOW_SOURCE_NAME] == "python -m orchestrator.sweep" and tags[MLFLOW_SOURCE_TYPE] == "LOCAL"
        assert tags[MLFLOW_GIT_COMMIT] == commit.stdout.strip()
    data_hash = parent.data.tags["data_hash"]
    for child in children:
        inputs = {i.tags[0].value: i.dataset for i in child.inputs.dataset_inputs}
        assert set(inputs) == {"train", "val", "test_en", "test_zh"}
        assert {d.digest for d in inputs.values()} == {data_hash[:36]}
        assert all(json.loads(d.source)["uri"] == str(demo_dir.resolve()) for d in inputs.values())
        assert (
            inputs["test_en"].name.endswith("test_en: 0015")
            and json.loads(inputs["test_en"].profile)["num_clips"] == 30
        )
        metrics = child.data.metrics
        with tempfile.TemporaryDirectory() as tmp:
            path = client.download_artifacts(child.info.run_id, "classification_report_test_en.json", tmp)
            logged = json.loads(Path(path).read_text())
        assert logged["accuracy"] == pytest.approx(metrics["test_en/accuracy"])
        assert logged["Angry"]["f1-score"] == pytest.approx(metrics["test_en/Angry/f1"])
        assert logged["weighted avg"]["f1-score"] == pytest.approx(metrics["test_en/weighted_f1"])


def test_the_papers_table_takes_its_averages_from_the_logged_json_report(store, tmp_path):
    parent_id = synthetic_sweep(store, "smoke", [FakeTrial("t1", {}, {"val": 0.6, "test_en": 0.5})])
    client = MlflowClient(store)
    (child,) = client.search_runs(
        [client.get_run(parent_id).info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    row = {"precision": 0.5, "recall": 0.5, "f1-score": 0.5, "support": 6}
    logged = {
        **{emotion: row for emotion in ("Neutral", "Angry", "Happy", "Sad", "Surprise")},
        "accuracy": 0.5,
        "macro avg": {"precision": 0.111, "recall": 0.222, "f1-score": 0.333, "support": 30},
        "weighted avg": {"precision": 0.444, "recall": 0.555, "f1-score": 0.666, "support": 30},
    }
    client.log_dict(child.info.run_id, logged, "classification_report_test_en.json")
    assert report.main([parent_id, "--tracking-uri", store, "--out", str(tmp_path / "r"), "--no-log"]) == 0
    markdown = (tmp_path / "r" / "report.md").read_text()
    assert "| Macro avg | 0.11 | 0.22 | 0.33 | 30 |" in markdown
    assert "| Weighted avg | 0.44 | 0.56 | 0.67 | 30 |" in markdown
