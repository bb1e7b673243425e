"""A features model from the tracking server loads without running code: skops with a trusted-types list;
a pickle in a model directory (or in the pipeline's place) is refused with one line, and predict says so."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from orchestrator import predict
from workers.acoustic.config import FeaturesConfig
from workers.acoustic.trial import (
    PIPELINE_FILE,
    build_classifier,
    class_probabilities,
    load_features_model,
    save_features_model,
)

LABELS = ("Angry", "Happy", "Neutral")


class RunsCode:
    """Unpickling this runs a shell command: what a planted pickle would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def fitted(classifier: str):
    values = np.random.default_rng(0).normal(size=(30, 6))
    labels = np.arange(30) % len(LABELS)
    cfg = FeaturesConfig(classifier=classifier, hidden_sizes=(8,), max_iter=300, seed=0)
    return build_classifier(cfg).fit(values, labels), values


@pytest.mark.parametrize("classifier", ["logreg", "svm", "mlp"])
def test_a_saved_pipeline_answers_as_the_fitted_one(tmp_path, classifier):
    pipeline, values = fitted(classifier)
    save_features_model(pipeline, LABELS, "eGeMAPSv02", ("f",) * 6, tmp_path / "model")
    loaded = load_features_model(tmp_path / "model")
    assert np.array_equal(class_probabilities(loaded.pipeline, values, 3), class_probabilities(pipeline, values, 3))


@pytest.fixture
def planted(tmp_path):
    """A saved model whose pipeline an attacker replaced with a code-running pickle; the marker it would touch."""
    pipeline, _ = fitted("logreg")
    directory = save_features_model(pipeline, LABELS, "eGeMAPSv02", ("f",) * 6, tmp_path / "model")
    (directory / PIPELINE_FILE).unlink()
    return directory, tmp_path / "code-ran"


def test_a_planted_joblib_pickle_is_refused_unloaded(planted):
    directory, marker = planted
    (directory / "pipeline.joblib").write_bytes(pickle.dumps(RunsCode(marker)))
    with pytest.raises(ValueError, match=r"refused: .* no pipeline.skops \(it holds pipeline.joblib\)") as error:
        load_features_model(directory)
    assert "\n" not in str(error.value) and not marker.exists()


def test_a_pickle_in_the_pipelines_place_is_refused_unloaded(planted):
    directory, marker = planted
    (directory / PIPELINE_FILE).write_bytes(pickle.dumps(RunsCode(marker)))
    with pytest.raises(ValueError, match="is not a skops file"):
        load_features_model(directory)
    assert not marker.exists()


def test_a_skops_file_with_an_untrusted_type_is_refused(planted):
    import skops.io
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    directory, marker = planted
    skops.io.dump(make_pipeline(FunctionTransformer(os.system)), directory / PIPELINE_FILE)
    with pytest.raises(ValueError, match="types outside the trusted list: .*system"):
        load_features_model(directory)


def test_predict_refuses_a_planted_pickle_in_one_line(planted, tmp_path, capsys):
    directory, marker = planted
    (directory / "pipeline.joblib").write_bytes(pickle.dumps(RunsCode(marker)))
    audio = tmp_path / "clip.wav"
    import soundfile as sf

    sf.write(audio, np.zeros(16000, dtype=np.float32), 16000)
    assert predict.main(["--model", str(directory), str(audio)]) == 1
    refusals = [line for line in capsys.readouterr().err.splitlines() if "refused" in line]
    assert len(refusals) == 1 and refusals[0].startswith("predict: refused:"), refusals
    assert not marker.exists()
