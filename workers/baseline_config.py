"""The typed configs of the baseline trials (acoustic features, transcripts): plain dataclasses.

Import-light (no numpy, torch or scikit-learn), like workers.config.TrialConfig, so the driver can
validate a sweep's keys and values without importing training code. The trials that run them are
workers.features_trial and workers.text_trial.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field

FEATURE_SETS = ("eGeMAPSv02", "ComParE_2016")  # openSMILE functionals: 88 and 6373 per clip
DEFAULT_FEATURE_SET = "eGeMAPSv02"
CLASSIFIERS = ("logreg", "svm", "mlp")
TINY_ENCODER = "tiny"  # TextConfig.encoder: a random tiny BERT with a tokenizer trained on the corpus
# What a saved model is (Tag.MODEL_KIND on the trial run, "kind" in its marker file) and the marker
# file that says so in the model directory; a fine-tuned encoder's directory has none of them.
FEATURES_MODEL_KIND = "acoustic_features"
FEATURES_MODEL_FILE = "features_model.json"
TEXT_MODEL_KIND = "text"
TEXT_MODEL_FILE = "text_model.json"


@dataclass(frozen=True)
class FeaturesConfig:
    """One acoustic-features trial. Kept apart from TrialConfig: none of its encoder, schedule or
    speed knobs apply, and a classifier's knobs mean nothing to the fine-tuning trial."""

    # Data: the same fields, meanings and defaults as TrialConfig's
    data_dir: str = ""  # shard directory (absolute path; filled in by the driver)
    train_speakers: tuple[str, ...] = ("0011", "0012", "0013", "0014")
    eval_sets: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"test_en": ("0015",)})
    val_fraction: float = 0.1  # of the training speakers' clips, held out for validation
    seed: int = 0
    # Features
    feature_set: str = DEFAULT_FEATURE_SET  # 'eGeMAPSv02' (88 functionals) or 'ComParE_2016' (6373)
    features_dir: str = ""  # where the functionals table lives ("": beside the shards, or the node's cache)
    num_workers: int = 0  # extraction processes when the table is missing (0: every core)
    # Classifier (features are standardised first, with the training clips' mean and deviation)
    classifier: str = "logreg"  # 'logreg' (multinomial logistic regression), 'svm' (RBF kernel) or 'mlp'
    C: float = 1.0  # logreg and svm: inverse regularisation strength (larger: less regularised)
    gamma: float = 0.0  # svm: RBF kernel width (0: scikit-learn's 'scale', 1 / (features x variance))
    hidden_sizes: tuple[int, ...] = (64,)  # mlp: units per hidden layer
    alpha: float = 1e-3  # mlp: L2 penalty
    max_iter: int = 1000  # logreg and mlp: optimiser iterations
    num_threads: int = 1  # BLAS threads for fitting; the driver sets it to the trial's CPUs

    def __post_init__(self) -> None:
        validate_split_config(self.train_speakers, self.eval_sets, self.val_fraction)
        if self.feature_set not in FEATURE_SETS:
            raise ValueError(f"feature_set {self.feature_set!r} is not one of {FEATURE_SETS}")
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier {self.classifier!r} is not one of {CLASSIFIERS}")
        if self.C <= 0 or self.alpha < 0 or self.gamma < 0:
            raise ValueError(f"need C > 0, alpha >= 0 and gamma >= 0; got C={self.C}, alpha={self.alpha}")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be one or more positive layer widths, got {self.hidden_sizes}")
        if self.max_iter < 1 or self.num_workers < 0:
            raise ValueError("max_iter must be >= 1, num_workers >= 0")
        if self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {self.num_threads}")

    @classmethod
    def from_dict(cls, values: dict) -> FeaturesConfig:
        """Build from plain values (a Tune config), with a clear error for unknown keys."""
        return cls(**plain_values(cls, values))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TextConfig:
    """One text trial. Kept apart from TrialConfig: its encoder, schedule and audio knobs do not apply."""

    # Data: the same fields, meanings and defaults as TrialConfig's
    data_dir: str = ""  # shard directory (absolute path; filled in by the driver)
    train_speakers: tuple[str, ...] = ("0011", "0012", "0013", "0014")
    eval_sets: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"test_en": ("0015",)})
    val_fraction: float = 0.1  # of the training speakers' clips, held out for validation
    seed: int = 0
    # Model
    # A hub id or a directory holding the encoder and its tokenizer; 'tiny': a random 2-layer BERT with a
    # WordPiece tokenizer trained on the training clips' transcripts (built per trial; seconds).
    encoder: str = "bert-base-multilingual-cased"
    head_dropout: float = 0.1
    max_length: int = 64  # tokens per transcript (ESD's longest sentence is ~30 tokens)
    # Optimisation
    learning_rate: float = 2e-5  # AdamW, constant
    batch_size: int = 16
    epochs: int = 3
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0: no clipping
    num_threads: int = 1  # torch CPU threads; the driver sets it to the trial's CPUs
    eval_batch_size: int = 64

    def __post_init__(self) -> None:
        validate_split_config(self.train_speakers, self.eval_sets, self.val_fraction)
        if not self.encoder:
            raise ValueError("encoder must be a hub id, a directory or 'tiny'")
        if self.learning_rate <= 0 or self.batch_size < 1 or self.epochs < 1 or self.max_length < 2:
            raise ValueError(
                f"need learning_rate > 0, batch_size >= 1, epochs >= 1, max_length >= 2; got {self.learning_rate}, "
                f"{self.batch_size}, {self.epochs}, {self.max_length}"
            )
        if not 0.0 <= self.head_dropout < 1.0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError("head_dropout must be in [0, 1); weight_decay and max_grad_norm >= 0")

    @classmethod
    def from_dict(cls, values: dict) -> TextConfig:
        """Build from plain values (a Tune config), with a clear error for unknown keys."""
        return cls(**plain_values(cls, values))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def validate_split_config(
    train_speakers: tuple[str, ...], eval_sets: dict[str, tuple[str, ...]], val_fraction: float
) -> None:
    """The checks TrialConfig makes on the same fields."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not train_speakers:
        raise ValueError("train_speakers must name at least one speaker")
    if not eval_sets:
        raise ValueError("eval_sets must name at least one held-out set")
    overlap = {s for speakers in eval_sets.values() for s in speakers} & set(train_speakers)
    if overlap:
        raise ValueError(f"speakers {sorted(overlap)} are in both training and a held-out set")


def check_key(cls: type, key: str) -> str:
    """`key` when it is a field of `cls`; ValueError naming the closest field otherwise."""
    names = [f.name for f in dataclasses.fields(cls)]
    if key in names:
        return key
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(names)}"
    raise ValueError(f"unknown {cls.__name__} key {key!r}{hint}")


def plain_values(cls: type, values: dict) -> dict:
    """`values` (JSON or Tune: lists for tuples, ints for floats) as `cls`'s fields declare them."""
    hints = typing.get_type_hints(cls)
    coerced = {}
    for key, value in values.items():
        hint = hints[check_key(cls, key)]
        if typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        elif typing.get_origin(hint) is dict and isinstance(value, dict):
            value = {k: tuple(v) for k, v in value.items()}
        elif hint is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        coerced[key] = value
    return coerced
