"""The typed config of the openSMILE acoustic-features baseline: a plain dataclass.

Import-light, like workers.finetune.config.TrialConfig; the trial that runs it is workers.acoustic.trial.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from workers.core.class_balance import check_class_weights
from workers.core.kind_config import plain_values, validate_split_config

FEATURE_SETS = ("eGeMAPSv02", "ComParE_2016")  # openSMILE functionals: 88 and 6373 per clip
DEFAULT_FEATURE_SET = "eGeMAPSv02"
CLASSIFIERS = ("logreg", "svm", "mlp")
# task='dimensions': each classifier's regression counterpart (ridge with alpha = 1/C, an RBF SVR with C and
# gamma per dimension, an MLP regressor), so a sweep's scenarios and knobs carry over unchanged.
REGRESSORS = {"logreg": "ridge", "svm": "svr", "mlp": "mlp"}
TASKS = ("categorical", "dimensions")  # workers.vocabulary.Task values the features baseline fits
# What a saved model is (Tag.MODEL_KIND on the trial run, "kind" in its marker file) and the marker
# file that says so in the model directory.
FEATURES_MODEL_KIND = "acoustic_features"
FEATURES_MODEL_FILE = "features_model.json"


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
    # What the trial predicts: 'categorical' (the corpus's classes) or 'dimensions' (arousal, valence, dominance
    # of a corpus that has them: regressors, scored by CCC)
    task: str = "categorical"
    # Classifier (features are standardised first, with the training clips' mean and deviation)
    classifier: str = "logreg"  # 'logreg' (multinomial logistic regression), 'svm' (RBF kernel) or 'mlp'
    C: float = 1.0  # logreg and svm: inverse regularisation strength (larger: less regularised)
    gamma: float = 0.0  # svm: RBF kernel width (0: scikit-learn's 'scale', 1 / (features x variance))
    hidden_sizes: tuple[int, ...] = (64,)  # mlp: units per hidden layer
    alpha: float = 1e-3  # mlp: L2 penalty
    max_iter: int = 1000  # logreg and mlp: optimiser iterations
    num_threads: int = 1  # BLAS threads for fitting; the driver sets it to the trial's CPUs
    # Per-class weights of the training clips (as sample weights, for every classifier): 'none', 'balanced'
    # (n / (k n_c), scikit-learn's class_weight='balanced') or 'sqrt' (workers.core.class_balance)
    class_weights: str = "none"

    def __post_init__(self) -> None:
        validate_split_config(self.train_speakers, self.eval_sets, self.val_fraction)
        if self.feature_set not in FEATURE_SETS:
            raise ValueError(f"feature_set {self.feature_set!r} is not one of {FEATURE_SETS}")
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier {self.classifier!r} is not one of {CLASSIFIERS}")
        if self.task not in TASKS:
            raise ValueError(
                f"task {self.task!r} is not one of {TASKS} for the features baseline ('both': fine-tuning only)"
            )
        if self.C <= 0 or self.alpha < 0 or self.gamma < 0:
            raise ValueError(f"need C > 0, alpha >= 0 and gamma >= 0; got C={self.C}, alpha={self.alpha}")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise ValueError(f"hidden_sizes must be one or more positive layer widths, got {self.hidden_sizes}")
        if self.max_iter < 1 or self.num_workers < 0:
            raise ValueError("max_iter must be >= 1, num_workers >= 0")
        if self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {self.num_threads}")
        check_class_weights(self.class_weights)

    @classmethod
    def from_dict(cls, values: dict) -> FeaturesConfig:
        """Build from plain values (a Tune config), with a clear error for unknown keys."""
        return cls(**plain_values(cls, values))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
