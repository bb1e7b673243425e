"""What a trial runs, by kind. A sweep names its kind; this maps the kind to a typed config and a run function.

    finetune   workers.config.TrialConfig               workers.recipe.run_trial         the paper's recipe
    features   workers.baseline_config.FeaturesConfig   workers.features_trial           openSMILE + classifier
    text       workers.baseline_config.TextConfig       workers.text_trial               transcripts + text encoder

The driver (grid validation, the Tune config, ASHA's horizon) and the trial (workers.trial) both
go through here, so neither branches on a kind. Import-light: the configs are plain dataclasses;
a run function is imported only when a trial runs it.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workers.baseline_config import (
    FEATURES_MODEL_FILE,
    FEATURES_MODEL_KIND,
    TEXT_MODEL_FILE,
    TEXT_MODEL_KIND,
    FeaturesConfig,
    TextConfig,
    check_key,
)
from workers.config import TrialConfig, canonical_key

FINETUNE = "finetune"
FEATURES = "features"
TEXT = "text"
FINETUNED_MODEL_KIND = "finetuned"  # a saved model without a baseline's marker file


@dataclass(frozen=True)
class TrialKind:
    name: str
    config: type  # a frozen dataclass with from_dict(values), train_speakers, eval_sets, data_dir, num_threads
    run: str  # "module:function", called as run(cfg, logger, reporter[, resume_dir=...]) -> final metrics
    # Continues from its last Tune checkpoint after a failure. The baselines take seconds to minutes
    # and report their model only at the end: a retried baseline trial starts over.
    resumable: bool
    max_epochs: Callable[[object], int]  # the most epochs a config reports (ASHA's horizon)
    key: Callable[[str], str]  # the config field a key names (aliases resolved); ValueError naming the closest

    def config_from(self, values: dict):
        """The typed config; ValueError or TypeError naming the bad key or value."""
        return self.config.from_dict(values)

    def run_function(self) -> Callable:
        module, _, function = self.run.partition(":")
        return getattr(importlib.import_module(module), function)


def _finetune_epochs(cfg: TrialConfig) -> int:
    # The recipe counts a stage's partial last pass as an epoch.
    return sum(math.ceil(stage.epochs) for stage in cfg.stage_list())


KINDS: dict[str, TrialKind] = {
    FINETUNE: TrialKind(FINETUNE, TrialConfig, "workers.recipe:run_trial", True, _finetune_epochs, canonical_key),
    FEATURES: TrialKind(
        FEATURES,
        FeaturesConfig,
        "workers.features_trial:run_features_trial",
        False,
        lambda cfg: 1,  # one fit, one report
        lambda key: check_key(FeaturesConfig, key),
    ),
    TEXT: TrialKind(
        TEXT,
        TextConfig,
        "workers.text_trial:run_text_trial",
        False,
        lambda cfg: cfg.epochs,
        lambda key: check_key(TextConfig, key),
    ),
}


def trial_kind(name: str) -> TrialKind:
    if name not in KINDS:
        raise ValueError(f"unknown trial kind {name!r}; known: {', '.join(KINDS)}")
    return KINDS[name]


def saved_model_kind(directory: str | Path) -> str:
    """What a saved model directory holds, from the marker file its trial wrote: FEATURES_MODEL_KIND,
    TEXT_MODEL_KIND, or FINETUNED_MODEL_KIND (the fine-tuned encoder's layout, workers.checkpoint)."""
    directory = Path(directory)
    if (directory / FEATURES_MODEL_FILE).exists():
        return FEATURES_MODEL_KIND
    if (directory / TEXT_MODEL_FILE).exists():
        return TEXT_MODEL_KIND
    return FINETUNED_MODEL_KIND
