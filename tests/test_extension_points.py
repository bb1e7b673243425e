"""The three extension points are one registry line each: an encoder family, a trial kind, a per-set metric.

Each test registers a toy, runs it through the real path (the recipe, the trial entry, the shared
evaluation) and unregisters it again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pytest
import torch

from shards.reader import open_reader
from workers import kinds
from workers.core import metrics
from workers.core.evaluation import evaluate_set
from workers.core.kind_config import check_key, plain_values
from workers.core.reporting import ListReporter
from workers.core.split import split_rows
from workers.core.tracking import NullLogger
from workers.finetune import encoders
from workers.finetune.config import RANDOM_STARTS, TrialConfig
from workers.finetune.encoders.waveform import PRE_NORM, tiny_waveform_config, waveform_family
from workers.finetune.recipe import setup, train_stage
from workers.payload import TrialPayload
from workers.trial import run_recorded
from workers.vocabulary import Key, Tag, TrialState


class RecordingLogger(NullLogger):
    def __init__(self):
        self.metrics: dict[str, float] = {}
        self.tags: dict[str, str] = {}
        self.artifacts: list[str] = []

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)

    def set_tags(self, tags):
        self.tags.update(tags)

    def log_dict(self, dictionary, artifact_file):
        self.artifacts.append(artifact_file)


# --- an encoder family: a Family and one register_family line ---


@pytest.fixture
def unispeech_family():
    """UniSpeech (transformers' UniSpeechModel, the wav2vec2 layout) under its own family and tiny start."""
    family = encoders.register_family(
        waveform_family(
            "unispeech",
            "transformers:UniSpeechModel",
            "tiny_unispeech",
            partial(tiny_waveform_config, "UniSpeechConfig", **PRE_NORM),
        )
    )
    yield family
    encoders.unregister_family(family.model_type)


def test_a_registered_encoder_family_trains_a_step_in_the_recipe(unispeech_family, demo_dir, tmp_path):
    assert "tiny_unispeech" in RANDOM_STARTS  # the trial config's starts follow the registry
    stage = {"trainable": "all_but_cnn", "epochs": 0.01, "learning_rate": 1e-3, "batch_size": 4}
    cfg = TrialConfig(
        data_dir=str(demo_dir),
        start="tiny_unispeech",
        train_speakers=("0011",),
        stages=(stage,),
        eval_every_steps=100,
        feature_cache_dir=str(tmp_path / "features"),
    )
    logger = RecordingLogger()
    trial = setup(cfg, logger, torch.device("cpu"), None)
    assert logger.tags[Tag.ENCODER_FAMILY] == "unispeech"
    before = {k: v.clone() for k, v in trial.model.state_dict().items()}
    train_stage(trial, ListReporter())
    after = trial.model.state_dict()
    assert trial.state.step == 1
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("encoder.encoder.") for k in moved)
    assert not any(k.startswith("encoder.feature_extractor.") for k in moved)  # all_but_cnn: front end frozen


def test_a_family_is_gone_once_unregistered(unispeech_family):
    encoders.unregister_family("unispeech")
    assert "tiny_unispeech" not in RANDOM_STARTS
    with pytest.raises(ValueError, match="supported families"):
        encoders.tiny_config("unispeech")
    encoders.register_family(unispeech_family)  # for the fixture's teardown


def test_a_start_name_belongs_to_one_family():
    clash = dataclasses.replace(encoders.FAMILIES["hubert"], model_type="hubert-again")
    with pytest.raises(ValueError, match="another family"):
        encoders.register_family(clash)


# --- a trial kind: a config, a run function and one register(TrialKind(...)) line ---


@dataclass(frozen=True)
class PriorConfig:
    """A baseline that predicts the training clips' label frequencies for every clip."""

    data_dir: str = ""
    train_speakers: tuple[str, ...] = ("0011", "0012")
    eval_sets: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"test_en": ("0015",)})
    val_fraction: float = 0.1
    seed: int = 0
    num_threads: int = 1

    @classmethod
    def from_dict(cls, values: dict) -> PriorConfig:
        return cls(**plain_values(cls, values))


def run_prior_trial(cfg: PriorConfig, logger, reporter) -> dict[str, float]:
    reader = open_reader(cfg.data_dir)
    split = split_rows(reader, cfg.train_speakers, cfg.eval_sets, cfg.val_fraction, cfg.seed)
    counts = np.bincount(reader.index.label[split.train_rows], minlength=len(reader.labels))
    prior = counts / counts.sum()
    final: dict[str, float] = {}
    for name, rows in split.eval_rows.items():
        probabilities = np.tile(prior, (len(rows), 1))
        final.update(evaluate_set(logger, name, reader.index.label[rows], probabilities, reader.labels))
    logger.log_metrics(final)
    reporter.report(final)
    return final


@pytest.fixture
def prior_kind():
    kind = kinds.register(
        kinds.TrialKind(
            name="prior",
            config=PriorConfig,
            run=f"{__name__}:run_prior_trial",
            resumable=False,
            max_epochs=lambda cfg: 1,
            key=lambda key: check_key(PriorConfig, key),
            model_kind="prior",
            model_marker="prior_model.json",
            load_model=f"{__name__}:run_prior_trial",
        )
    )
    yield kind
    kinds.unregister(kind.name)


def test_a_registered_trial_kind_runs_through_the_trial_entry(prior_kind, demo_dir):
    logger, reporter = RecordingLogger(), ListReporter()
    final = run_recorded(TrialPayload({"data_dir": str(demo_dir)}, kind="prior"), logger, reporter)
    assert reporter.reports == [final]
    assert logger.tags[Tag.TRIAL_STATE] == TrialState.COMPLETED  # its final report held every set's accuracy
    assert 0.0 <= final[Key.accuracy("test_en")] <= 1.0
    assert Key.classification_report("test_en") in logger.artifacts
    assert kinds.trial_kind("prior").key("seed") == "seed"


# --- a per-set metric: a function and one register_set_metric line ---


@pytest.fixture
def confident_share():
    def share(y_true, y_pred, probabilities, labels):
        return {"confident_share": float(np.mean(probabilities.max(axis=1) >= 0.5)) if len(y_true) else 0.0}

    metrics.register_set_metric("confident_share", share)
    yield share
    metrics.unregister_set_metric("confident_share")


def test_a_registered_per_set_metric_is_in_every_evaluation(confident_share):
    labels = ("angry", "happy", "neutral")
    probabilities = np.array([[0.9, 0.05, 0.05], [0.4, 0.3, 0.3], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    y_true = np.array([0, 1, 1, 2])
    result = evaluate_set(NullLogger(), "test_en", y_true, probabilities, labels)
    assert result[Key.set_metric("test_en", "confident_share")] == pytest.approx(0.75)
    assert result[Key.accuracy("test_en")] == pytest.approx(0.75)
    metrics.unregister_set_metric("confident_share")
    assert Key.set_metric("test_en", "confident_share") not in evaluate_set(
        NullLogger(), "test_en", y_true, probabilities, labels
    )
