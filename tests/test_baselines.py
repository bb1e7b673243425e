"""The baselines: openSMILE features (cached per corpus), a features trial and a text trial, each logged
to a real MLflow store with the same metric set as the fine-tuning trial."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from shards.demo import DEMO_SPEAKERS, build_demo_corpus, demo_clips
from shards.reader import open_reader
from shards.schema import EMOTIONS
from shards.writer import ShardWriter
from workers.acoustic.extract import TABLE_DIR, load_or_extract
from workers.acoustic.trial import FeaturesConfig, load_features_model, predict_features, run_features_trial
from workers.core.reporting import ListReporter
from workers.core.tracking import MlflowRunLogger, NullLogger
from workers.text.model import build_tiny_text_encoder, load_text_model, predict_text, read_transcripts
from workers.text.trial import TextConfig, run_text_trial
from workers.vocabulary import Key, Tag

EVAL_SETS = {"test_en": ("0015",), "test_zh": ("0002",)}
SETS = ("val", *EVAL_SETS)


def mlflow_run(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    artifacts = Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts"
    experiment_id = client.create_experiment("baselines", artifact_location=artifacts.as_uri())
    run_id = client.create_run(experiment_id).info.run_id
    return client, MlflowRunLogger(tracking_uri, run_id)


def assert_full_metric_set(client, run_id: str) -> dict[str, float]:
    """What the fine-tuning trial logs per evaluation set: metrics, reports, confusion matrix, reliability."""
    metrics = client.get_run(run_id).data.metrics
    for name in SETS:
        for key in ("loss", "accuracy", "macro_precision", "macro_f1", "weighted_f1", "uar", "ece"):
            assert f"{name}/{key}" in metrics, f"{name}/{key} not logged"
        for emotion in EMOTIONS:
            for key in ("precision", "recall", "f1", "support"):
                assert f"{name}/{emotion}/{key}" in metrics
        assert 0.0 <= metrics[f"{name}/accuracy"] <= 1.0 and 0.0 <= metrics[f"{name}/ece"] <= 1.0
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    for name in SETS:  # the JSON report too: the report's tables read it (as the fine-tuning trial's)
        expected = {
            Key.classification_report(name),
            Key.classification_report(name, "txt"),
            Key.confusion_matrix(name),
            Key.reliability(name),
        }
        assert expected <= artifacts, f"{sorted(expected - artifacts)} not logged"
    assert "model" in artifacts
    return metrics


def test_acoustic_features_are_computed_once_and_again_when_the_shards_change(tmp_path):
    data_dir = tmp_path / "demo"
    build_demo_corpus(data_dir, seed=0, clips_per_emotion=1)
    reader = open_reader(data_dir)

    first, status = load_or_extract(data_dir, num_workers=2)  # the process pool
    assert status == "computed"
    assert first.values.shape == (len(reader), 88) and len(first.names) == 88
    assert np.isfinite(first.values).all() and first.values.std(axis=0).max() > 0
    assert list(first.utterance_id) == list(reader.index.utterance_id)
    stored = list((data_dir / TABLE_DIR).glob("eGeMAPSv02-*.arrow"))
    assert [p.name for p in stored] == [f"eGeMAPSv02-{reader.content_hash[:16]}.arrow"]

    second, status = load_or_extract(data_dir, num_workers=2)
    assert status == "hit"
    np.testing.assert_array_equal(second.values, first.values)

    build_demo_corpus(data_dir, seed=1, clips_per_emotion=1)  # same clip ids, different audio
    changed, status = load_or_extract(data_dir, num_workers=1)
    assert status == "computed"
    assert changed.content_hash != first.content_hash
    assert not np.allclose(changed.values, first.values)
    assert len(list((data_dir / TABLE_DIR).glob("eGeMAPSv02-*.arrow"))) == 1  # the stale table is gone


def test_features_trial_logs_the_full_metric_set_and_beats_chance_on_held_out_speakers(demo_dir, tracking_uri):
    client, logger = mlflow_run(tracking_uri)
    reporter = ListReporter()
    cfg = FeaturesConfig(data_dir=str(demo_dir), eval_sets=EVAL_SETS, classifier="logreg", C=0.1, num_workers=2)

    final = run_features_trial(cfg, logger, reporter)

    metrics = assert_full_metric_set(client, logger.run_id)
    tags = client.get_run(logger.run_id).data.tags
    assert tags[Tag.MODEL_KIND] == "acoustic_features"
    assert tags[Tag.DATA_HASH] == open_reader(demo_dir).content_hash
    # Five balanced classes: chance is 0.2. Emotion lives in the demo's prosody, so functionals find it.
    assert metrics["test_en/accuracy"] > 0.6
    assert reporter.reports[-1]["test_en/accuracy"] == pytest.approx(final["test_en/accuracy"])

    # The saved model answers from audio alone, as the trial scored it.
    model_dir = client.download_artifacts(logger.run_id, "model", str(demo_dir.parent / "features-model"))
    model = load_features_model(model_dir)
    reader = open_reader(demo_dir)
    rows = reader.index.select(["0015"])
    predicted = [np.argmax(predict_features(model, reader.audio(int(r)))) for r in rows]
    assert np.mean(np.array(predicted) == reader.index.label[rows]) == pytest.approx(metrics["test_en/accuracy"])


@pytest.mark.parametrize(("classifier", "class_weights"), [("svm", "balanced"), ("mlp", "sqrt")])
def test_every_classifier_fits_and_reports(demo_dir, classifier, class_weights):
    """... with class weights as sample weights (the logreg trial above fits without)."""
    cfg = FeaturesConfig(
        data_dir=str(demo_dir),
        eval_sets=EVAL_SETS,
        classifier=classifier,
        hidden_sizes=(16,),
        class_weights=class_weights,
    )
    final = run_features_trial(cfg, NullLogger(), ListReporter())
    assert final["test_en/accuracy"] > 0.4


def test_features_config_rejects_what_it_cannot_run():
    with pytest.raises(ValueError, match="classifier"):
        FeaturesConfig(classifier="forest")
    with pytest.raises(ValueError, match="feature_set"):
        FeaturesConfig(feature_set="MFCC")
    with pytest.raises(ValueError, match="both training and a held-out set"):
        FeaturesConfig(eval_sets={"test_en": ("0011",)})
    with pytest.raises(ValueError, match="unknown FeaturesConfig key"):
        FeaturesConfig.from_dict({"learning_rate": 1e-3})
    assert FeaturesConfig.from_dict({"hidden_sizes": [32, 16], "C": 2}).hidden_sizes == (32, 16)


def test_text_trial_logs_the_full_metric_set_and_its_model_reloads(demo_dir, tracking_uri, tmp_path):
    reader = open_reader(demo_dir)
    encoder_dir = build_tiny_text_encoder(tmp_path / "tiny-bert", list(read_transcripts(reader)))
    client, logger = mlflow_run(tracking_uri)
    reporter = ListReporter()
    cfg = TextConfig(
        data_dir=str(demo_dir), eval_sets=EVAL_SETS, encoder=str(encoder_dir), learning_rate=1e-3, epochs=2
    )

    final = run_text_trial(cfg, logger, reporter)

    metrics = assert_full_metric_set(client, logger.run_id)
    assert client.get_run(logger.run_id).data.tags[Tag.MODEL_KIND] == "text"
    assert [r["epoch"] for r in reporter.reports] == [1, 2]
    assert reporter.reports[-1]["test_en/accuracy"] == pytest.approx(final["test_en/accuracy"])
    model_dir = client.download_artifacts(logger.run_id, "model", str(tmp_path / "text-model"))
    model = load_text_model(model_dir)
    rows = reader.index.select(["0015"])
    probabilities = predict_text(model, list(read_transcripts(reader)[rows]))
    accuracy = np.mean(probabilities.argmax(axis=1) == reader.index.label[rows])
    assert accuracy == pytest.approx(metrics["test_en/accuracy"])


def test_text_trial_names_how_many_clips_lack_a_transcript(tmp_path):
    data_dir = tmp_path / "untranscribed"
    with ShardWriter(data_dir, speakers=DEMO_SPEAKERS) as writer:
        for k, clip in enumerate(demo_clips(seed=0, clips_per_emotion=1)):
            writer.add(dataclasses.replace(clip, transcript="") if k % 3 == 0 else clip)
    reader = open_reader(data_dir)
    assert (read_transcripts(reader) == "").sum() == 15
    cfg = TextConfig(data_dir=str(data_dir), encoder="tiny", val_fraction=0.0, eval_sets={"test_en": ("0015",)})
    used = reader.index.select(["0011", "0012", "0013", "0014", "0015"])
    missing = int((read_transcripts(reader)[used] == "").sum())
    assert 0 < missing < len(used)
    with pytest.raises(ValueError, match=f"{missing} of {len(used)} clips this text trial uses have no transcript"):
        run_text_trial(cfg, NullLogger(), ListReporter())
