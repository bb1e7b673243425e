"""The baselines as sweeps: the real driver (local Ray, MLflow in a temp dir) runs `features` and `text`
trials as it runs fine-tuning trials; the report puts sweeps on the same data side by side and refuses
sweeps on different data; predict answers with a features model from audio alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from mlflow.tracking import MlflowClient
from sweep_stores import FakeTrial, synthetic_sweep
from test_baselines import assert_full_metric_set

from orchestrator import predict, report, results, sweep
from shards.reader import open_reader
from workers.acoustic.trial import load_features_model, predict_features
from workers.vocabulary import Key, RunStatus, Tag

pytestmark = pytest.mark.slow


def run_sweep(name: str, demo_dir, root, *flags: str) -> tuple[str, str]:
    """(tracking URI, parent run id) of one finished sweep run through the driver's main."""
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    code = sweep.main(
        [name, "--data", str(demo_dir), "--tracking-uri", uri, "--storage", str(root / "ray"), "--cpus-per-trial", "1"]
        + list(flags)
    )
    assert code == 0
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    (parent,) = [r for r in client.search_runs([experiment.experiment_id]) if Tag.PARENT_RUN not in r.data.tags]
    return uri, parent.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("baseline_sweeps")


@pytest.fixture(scope="module")
def features_sweep(demo_dir, local_ray, store):
    # The tiny preset: one configuration per classifier (logreg, svm, mlp).
    return run_sweep("features", demo_dir, store, "--preset", "tiny")


@pytest.fixture(scope="module")
def text_sweep(demo_dir, local_ray, store):
    # The tiny preset with one batch size: its 2 learning rates, 2 epochs each.
    return run_sweep("text", demo_dir, store, "--preset", "tiny", "--set", "batch_size=16", "--set", "epochs=2")


def children(uri: str, parent_id: str) -> list:
    client = MlflowClient(uri)
    experiment_id = client.get_run(parent_id).info.experiment_id
    return client.search_runs([experiment_id], filter_string=f"tags.`{Tag.PARENT_RUN}` = '{parent_id}'")


def test_features_sweep_runs_each_classifier_as_a_trial_with_the_full_metric_set(features_sweep, demo_dir, capsys):
    uri, parent_id = features_sweep
    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    assert parent.info.status == RunStatus.FINISHED
    assert parent.data.tags[Tag.TRIAL_KIND] == "features"
    assert parent.data.tags[Tag.DATA_HASH] == open_reader(demo_dir).content_hash
    runs = children(uri, parent_id)
    assert sorted(r.data.tags[Tag.SCENARIO] for r in runs) == ["logreg", "mlp", "svm"]
    for run in runs:
        assert run.info.status == RunStatus.FINISHED
        assert run.data.tags[Tag.TRIAL_KIND] == "features"
        assert run.data.tags[Tag.MODEL_KIND] == "acoustic_features"
        assert run.data.tags[Tag.TRIAL_STATE] == "completed"
        assert run.data.tags[Tag.DATA_HASH] == parent.data.tags[Tag.DATA_HASH]
        assert run.data.params["classifier"] == run.data.tags[Tag.SCENARIO]
        assert run.data.tags[Tag.TEST_SPEAKERS] == "0002,0015"  # the paper plan's held-out speakers
        assert_full_metric_set(client, run.info.run_id)
    best = results.load_sweep(client, parent).best()
    # Five balanced classes: chance is 0.2; the demo's emotions live in prosody that functionals measure.
    assert best.metric("test_en/accuracy") > 0.5
    assert parent.data.metrics["best/test_en/accuracy"] == pytest.approx(best.metric("test_en/accuracy"))
    # Progress lines and the summary, as for fine-tuning sweeps (the fixture's output, unless already read).
    out = capsys.readouterr().out
    if out:
        assert "started" in out and "finished" in out and "trials (best first by val/accuracy)" in out


def test_text_sweep_runs_the_tiny_encoder_on_the_transcripts_with_the_full_metric_set(text_sweep):
    uri, parent_id = text_sweep
    client = MlflowClient(uri)
    assert client.get_run(parent_id).data.tags[Tag.TRIAL_KIND] == "text"
    runs = children(uri, parent_id)
    assert sorted(float(r.data.params["learning_rate"]) for r in runs) == [1e-3, 3e-3]
    for run in runs:
        assert run.info.status == RunStatus.FINISHED
        assert run.data.params["encoder"] == "tiny" and run.data.tags[Tag.MODEL_KIND] == "text"
        assert_full_metric_set(client, run.info.run_id)
        curve = client.get_metric_history(run.info.run_id, Key.curve("val/loss"))
        assert len({point.step for point in curve}) == 2  # one point per epoch


def test_report_compares_sweeps_on_the_same_data_in_one_table(features_sweep, text_sweep, tmp_path, capsys):
    uri, features_id = features_sweep
    _, text_id = text_sweep
    out = tmp_path / "compare"

    code = report.main([features_id, text_id, "--tracking-uri", uri, "--out", str(out)])

    assert code == 0
    markdown = (out / "report.md").read_text()
    assert (out / "report.html").exists()
    client = MlflowClient(uri)
    header = next(line for line in markdown.splitlines() if line.startswith("| sweep"))
    for name in ("test_en/accuracy", "test_en/uar", "test_en/macro_f1", "test_zh/accuracy"):
        assert name in header
    columns = [c.strip() for c in header.strip("|").split("|")]
    for parent_id, kind in ((features_id, "features"), (text_id, "text")):
        best = results.load_sweep(client, client.get_run(parent_id)).best()
        row = next(line for line in markdown.splitlines() if f"| {parent_id[:8]} |" in line)
        cells = dict(zip(columns, (c.strip() for c in row.strip("|").split("|"))))
        assert cells["kind"] == kind and cells["selected trial"].startswith(best.trial_id)
        for stat in ("accuracy", "uar", "macro_f1"):
            assert cells[f"test_en/{stat}"] == f"{best.metric(f'test_en/{stat}'):.3f}"
    assert features_id[:8] in capsys.readouterr().out  # the table is printed too


def test_report_refuses_to_compare_sweeps_on_different_data(features_sweep, capsys, tmp_path):
    uri, features_id = features_sweep
    other_id = synthetic_sweep(uri, "smoke", [FakeTrial("t0", {}, {"val": 0.5, "test_en": 0.4})])  # data_hash f…f

    code = report.main([features_id, other_id, "--tracking-uri", uri, "--out", str(tmp_path / "refused")])

    assert code == 1
    error = capsys.readouterr().err
    data_hash = MlflowClient(uri).get_run(features_id).data.tags[Tag.DATA_HASH]
    assert "different data" in error and data_hash[:16] in error and "f" * 16 in error
    assert not (tmp_path / "refused" / "report.md").exists()


def test_predict_answers_with_a_features_model_from_audio_alone(features_sweep, demo_dir, tmp_path, capsys):
    uri, parent_id = features_sweep
    reader = open_reader(demo_dir)
    row = int(reader.index.select(["0015"])[0])
    wav = tmp_path / "held_out.wav"
    sf.write(wav, reader.audio(row).astype(np.float32) / 32768, 16_000)

    code = predict.main(["--run", parent_id, str(wav), "--tracking-uri", uri, "--threshold", "0.01", "--json"])

    assert code == 0
    answer = json.loads(capsys.readouterr().out)
    (result,) = answer["files"]
    assert result["answered"] and result["decision"] in answer["labels"]
    # The sweep's best trial's model, as the trial saved it, gives the same probabilities on the same clip.
    best = results.load_sweep(MlflowClient(uri), MlflowClient(uri).get_run(parent_id)).best()
    assert answer["model"]["run_id"] == best.run_id
    model_dir = MlflowClient(uri).download_artifacts(best.run_id, "model", str(tmp_path))
    expected = predict_features(load_features_model(model_dir), reader.audio(row))
    got = np.array([result["probabilities"][label] for label in answer["labels"]])
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_predict_refuses_a_text_model_with_the_reason(text_sweep, demo_dir, tmp_path, capsys):
    uri, parent_id = text_sweep
    wav = tmp_path / "clip.wav"
    sf.write(wav, open_reader(demo_dir).audio(0).astype(np.float32) / 32768, 16_000)

    assert predict.main(["--run", parent_id, str(wav), "--tracking-uri", uri]) == 1
    assert "reads transcripts, not audio" in capsys.readouterr().err
