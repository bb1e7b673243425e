"""The acoustic-features baseline: openSMILE functionals, standardised, into a scikit-learn classifier.

The ESD paper's baseline, and what learns from real speech on a CPU in minutes. One trial: the
corpus's functionals (workers.acoustic.extract, computed once per node), the same speaker split
as the fine-tuning trial, a classifier fitted on the training clips, then the same metric set on
every evaluation set, logged through the same RunLogger and reported through the same Reporter.

The model (`model/` artifact) is a pickled scikit-learn pipeline plus a JSON that says which
feature set it needs, so `predict_features` answers from audio alone.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from shards.reader import open_reader
from workers.acoustic.config import CLASSIFIERS, FEATURES_MODEL_FILE, FEATURES_MODEL_KIND, REGRESSORS, FeaturesConfig
from workers.acoustic.extract import build_smile, functionals, load_or_extract
from workers.core.class_balance import class_counts, class_weights, counts_text
from workers.core.dimensions import evaluate_dimensions
from workers.core.evaluation import evaluate_set
from workers.core.reporting import Reporter
from workers.core.run_note import split_note
from workers.core.split import split_rows
from workers.core.tracking import RunLogger
from workers.vocabulary import Key, Tag, Task

__all__ = ["CLASSIFIERS", "FeaturesConfig", "run_features_trial", "load_features_model", "predict_features"]
MODEL_KIND = FEATURES_MODEL_KIND
# skops's format: loading it builds objects of listed types only, it never runs code (a pickle does, and
# whoever can write to the tracking server could plant one). The types below are the ones build_classifier's
# pipelines hold beyond what skops trusts by default (scikit-learn estimators, numpy, plain containers).
PIPELINE_FILE = "pipeline.skops"
TRUSTED_TYPES = (
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
)
MODEL_FILE = FEATURES_MODEL_FILE


def build_classifier(cfg: FeaturesConfig):
    """Standardisation then the classifier; every step seeded."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if cfg.classifier == "logreg":
        model = LogisticRegression(C=cfg.C, max_iter=cfg.max_iter, random_state=cfg.seed)
    elif cfg.classifier == "svm":
        # Platt scaling (cross-validated sigmoid) gives the probabilities that ECE, reliability diagrams and
        # predict's threshold need; SVC(probability=True) does the same and is deprecated in scikit-learn 1.9.
        svm = SVC(C=cfg.C, gamma=cfg.gamma or "scale", random_state=cfg.seed)
        model = CalibratedClassifierCV(svm, method="sigmoid", ensemble=False)
    else:
        model = MLPClassifier(
            hidden_layer_sizes=cfg.hidden_sizes, alpha=cfg.alpha, max_iter=cfg.max_iter, random_state=cfg.seed
        )
    return make_pipeline(StandardScaler(), model)


def build_regressor(cfg: FeaturesConfig):
    """task='dimensions': standardisation then the classifier's regression counterpart, every target standardised."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.linear_model import Ridge
    from sklearn.multioutput import MultiOutputRegressor
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    if cfg.classifier == "logreg":
        model = Ridge(alpha=1.0 / cfg.C)
    elif cfg.classifier == "svm":
        model = MultiOutputRegressor(SVR(C=cfg.C, gamma=cfg.gamma or "scale"))
    else:
        model = MLPRegressor(
            hidden_layer_sizes=cfg.hidden_sizes,
            alpha=cfg.alpha,
            max_iter=cfg.max_iter,
            random_state=cfg.seed,
            early_stopping=True,  # a tenth of the training clips stops it: regressors overfit 88 functionals fast
        )
    return make_pipeline(StandardScaler(), TransformedTargetRegressor(regressor=model, transformer=StandardScaler()))


def run_features_trial(cfg: FeaturesConfig, logger: RunLogger, reporter: Reporter) -> dict[str, float]:
    """Fit one classifier (or regressor) configuration and return its final metrics (also logged and reported)."""
    started = time.perf_counter()
    reader = open_reader(cfg.data_dir)
    dimensional = cfg.task == Task.DIMENSIONS
    if dimensional and not reader.dimensions:
        raise ValueError(
            f"task='dimensions' needs a corpus with dimensional labels; {cfg.data_dir} has none "
            "(MSP-Podcast, IEMOCAP, or a table with arousal/valence/dominance columns have them)"
        )
    split = split_rows(reader, cfg.train_speakers, cfg.eval_sets, cfg.val_fraction, cfg.seed)
    train_labels = reader.index.label[split.train_rows]
    features, status = load_or_extract(
        cfg.data_dir, cfg.feature_set, cfg.features_dir or None, num_workers=cfg.num_workers or None
    )
    logger.log_params(cfg.to_dict())
    logger.set_tags(
        {
            Tag.MODEL_KIND: MODEL_KIND,
            Tag.DATA_HASH: reader.content_hash,
            Tag.TRAIN_SPEAKERS: ",".join(cfg.train_speakers),
            Tag.ACOUSTIC_FEATURES: f"{cfg.feature_set}: {status}",
            Tag.LABELS: ",".join(reader.labels),
            Tag.NOTE: split_note(f"the acoustic baseline ({cfg.feature_set}, {model_name(cfg)})", cfg, split),
            Tag.TRAIN_CLIPS_PER_CLASS: counts_text(class_counts(train_labels, len(reader.labels)), reader.labels),
        }
    )
    setup_seconds = time.perf_counter() - started
    final: dict[str, float] = {}
    with threadpool_limits(cfg.num_threads):  # numpy's BLAS would otherwise take every core of the node
        if dimensional:
            pipeline = fit_and_evaluate_regressor(cfg, logger, reader, split, features.values, final)
        else:
            pipeline = build_classifier(cfg)
            pipeline.fit(features.values[split.train_rows], train_labels, **fit_weights(cfg, pipeline, train_labels))
            for name, rows in split.eval_rows.items():
                probabilities = class_probabilities(pipeline, features.values[rows], len(reader.labels))
                final.update(evaluate_set(logger, name, reader.index.label[rows], probabilities, reader.labels))
    final.update({Key.SETUP_SECONDS: setup_seconds, Key.TRIAL_SECONDS: time.perf_counter() - started})
    logger.log_metrics(final)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_features_model(
            pipeline,
            () if dimensional else reader.labels,
            cfg.feature_set,
            features.names,
            Path(tmp) / "model",
            dimensions=reader.dimensions if dimensional else (),
        )
        logger.log_artifacts(str(model_dir), "model")
        reporter.report(final, checkpoint_dir=model_dir)
    return final


def fit_weights(cfg: FeaturesConfig, pipeline, train_labels: np.ndarray) -> dict:
    """The classifier's `sample_weight` (its class's weight per clip) as Pipeline.fit takes it; {} for none.
    Sample weights rather than class_weight=: the MLP has no class_weight, and one rule serves all three."""
    if cfg.class_weights == "none":
        return {}
    weights = class_weights(class_counts(train_labels, int(train_labels.max(initial=0)) + 1), cfg.class_weights)
    return {f"{pipeline.steps[-1][0]}__sample_weight": weights[train_labels]}


def model_name(cfg: FeaturesConfig) -> str:
    return REGRESSORS[cfg.classifier] if cfg.task == Task.DIMENSIONS else cfg.classifier


def fit_and_evaluate_regressor(cfg: FeaturesConfig, logger: RunLogger, reader, split, values, final: dict):
    """Fit on the training clips that have every dimension; CCC, PCC and MAE per dimension on every set."""
    targets = reader.index.dimensions
    train_rows = split.train_rows[np.isfinite(targets[split.train_rows]).all(axis=1)]
    pipeline = build_regressor(cfg)
    pipeline.fit(values[train_rows], targets[train_rows])
    for name, rows in split.eval_rows.items():
        predicted = pipeline.predict(values[rows]).reshape(len(rows), -1)
        final.update(evaluate_dimensions(logger, name, targets[rows], predicted, reader.dimensions))
        mse = np.nanmean((targets[rows] - predicted) ** 2) if len(rows) else 0.0
        final[Key.set_metric(name, Key.LOSS)] = float(mse)  # a regressor's loss: its mean squared error
    return pipeline


def class_probabilities(pipeline, values: np.ndarray, num_labels: int) -> np.ndarray:
    """[clips, num_labels] probabilities; a label missing from training gets probability 0."""
    probabilities = np.zeros((len(values), num_labels))
    if len(values):
        probabilities[:, pipeline.classes_] = pipeline.predict_proba(values)
    return probabilities


# --- The saved model: what `predict` needs to answer from audio alone ---


@dataclass
class FeaturesModel:
    pipeline: object  # scikit-learn Pipeline: StandardScaler -> classifier (or regressor)
    labels: list[str]  # [] for a dimensional model
    feature_set: str
    feature_names: tuple[str, ...]
    dimensions: tuple[str, ...] = ()  # a dimensional model's outputs (arousal, valence, ...), in column order
    _smile: object = None

    def smile(self):
        if self._smile is None:
            self._smile = build_smile(self.feature_set)
        return self._smile


def save_features_model(
    pipeline,
    labels: tuple[str, ...],
    feature_set: str,
    feature_names: tuple[str, ...],
    directory: str | Path,
    dimensions: tuple[str, ...] = (),
) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    import skops.io

    skops.io.dump(pipeline, directory / PIPELINE_FILE)
    description = {
        "kind": MODEL_KIND,
        "labels": list(labels),
        "feature_set": feature_set,
        "feature_names": list(feature_names),
    }
    if dimensions:
        description["dimensions"] = list(dimensions)
    (directory / MODEL_FILE).write_text(json.dumps(description, indent=1))
    return directory


def is_features_model_dir(directory: str | Path) -> bool:
    return (Path(directory) / MODEL_FILE).exists()


def load_features_model(directory: str | Path) -> FeaturesModel:
    """A saved features model; ValueError (one line) for a pipeline that is not skops with trusted types only."""
    directory = Path(directory)
    if not is_features_model_dir(directory):
        raise FileNotFoundError(f"{directory} is not a saved features model (needs {MODEL_FILE} and {PIPELINE_FILE})")
    description = json.loads((directory / MODEL_FILE).read_text())
    pipeline = load_pipeline(directory)
    return FeaturesModel(
        pipeline,
        description["labels"],
        description["feature_set"],
        tuple(description["feature_names"]),
        tuple(description.get("dimensions", ())),
    )


def load_pipeline(directory: Path):
    """The skops pipeline of a saved model, refusing anything that could run code when loaded."""
    import zipfile

    import skops.io

    path = directory / PIPELINE_FILE
    if not path.exists():
        others = sorted(p.name for p in directory.iterdir() if p.name != MODEL_FILE)
        raise ValueError(
            f"refused: {directory} has no {PIPELINE_FILE} (it holds {', '.join(others) or 'nothing else'}); "
            "only a skops pipeline loads, since a pickle (joblib) runs code when loaded"
        )
    try:
        untrusted = [t for t in skops.io.get_untrusted_types(file=path) if t not in TRUSTED_TYPES]
    except (zipfile.BadZipFile, KeyError, ValueError) as error:
        raise ValueError(
            f"refused: {path} is not a skops file ({error}); a pickle in its place is not loaded"
        ) from None
    if untrusted:
        raise ValueError(f"refused: {path} holds types outside the trusted list: {', '.join(untrusted[:5])}")
    return skops.io.load(path, trusted=list(TRUSTED_TYPES))


def predict_features(model: FeaturesModel, audio_16k: np.ndarray) -> np.ndarray:
    """Class probabilities (in `model.labels` order) for one clip: int16 samples or floats in [-1, 1] at 16 kHz;
    a dimensional model's values instead (in `model.dimensions` order)."""
    values = functionals(model.smile(), np.asarray(audio_16k))[None, :]
    if model.dimensions:
        return model.pipeline.predict(values).reshape(-1)
    return class_probabilities(model.pipeline, values, len(model.labels))[0]


class SavedFeaturesModel:
    """The saved-model interface of workers.kinds: openSMILE and scikit-learn answer on the CPU."""

    def __init__(self, model: FeaturesModel):
        self.model = model
        self.labels = list(model.labels)
        self.dimensions = tuple(model.dimensions)

    def to(self, device) -> SavedFeaturesModel:
        return self

    def probabilities(self, audio_16k: np.ndarray) -> np.ndarray:
        if self.dimensions:
            return np.zeros(0)
        return predict_features(self.model, audio_16k)

    def values(self, audio_16k: np.ndarray) -> np.ndarray:
        """A dimensional model's values (in `dimensions` order) for one clip."""
        return predict_features(self.model, audio_16k) if self.dimensions else np.zeros(0)


def load_saved_model(directory: Path) -> SavedFeaturesModel:
    return SavedFeaturesModel(load_features_model(directory))
