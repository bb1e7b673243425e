"""The trial-kind registry: what a trial runs, by kind. A sweep names its kind; this maps it to a typed
config, a run function and a saved-model loader. One `register(TrialKind(...))` line adds a kind.

    finetune   workers.finetune.config.TrialConfig    workers.finetune.recipe:run_trial    the paper's recipe
    features   workers.acoustic.config.FeaturesConfig workers.acoustic.trial               openSMILE + classifier
    text       workers.text.config.TextConfig         workers.text.trial                   transcripts + text encoder

The driver (grid validation, the Tune config, ASHA's horizon, predict) and the trial (workers.trial)
both go through here, so neither branches on a kind. Import-light: the configs are plain
dataclasses; a run function or model loader is imported only when it is called.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workers.acoustic.config import FEATURES_MODEL_FILE, FEATURES_MODEL_KIND, FeaturesConfig
from workers.core.kind_config import canonical_values, check_key, typed_value
from workers.finetune.config import TrialConfig, canonical_key
from workers.text.config import KEY_ALIASES as TEXT_KEY_ALIASES
from workers.text.config import TEXT_MODEL_FILE, TEXT_MODEL_KIND, TextConfig

FINETUNE = "finetune"
FEATURES = "features"
TEXT = "text"
FINETUNED_MODEL_KIND = "finetuned"  # a saved model without a baseline's marker file


def _import(target: str) -> Callable:
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


@dataclass(frozen=True, kw_only=True)
class TrialKind:
    name: str
    config: type  # a frozen dataclass with from_dict(values), train_speakers, eval_sets, data_dir, num_threads
    run: str  # "module:function", called as run(cfg, logger, reporter[, resume_dir=...]) -> final metrics
    # Continues from its last Tune checkpoint after a failure. The baselines take seconds to minutes
    # and report their model only at the end: a retried baseline trial starts over.
    resumable: bool
    max_epochs: Callable[[object], int]  # the most epochs a config reports (ASHA's horizon)
    key: Callable[[str], str]  # the config field a key names (aliases resolved); ValueError naming the closest
    # A saved model of this kind: its Tag.MODEL_KIND value, the marker file in its directory that says so
    # ("": the fallback, a directory with no kind's marker), and "module:function" loading the directory
    # into a SavedModel (labels, to(device), probabilities(audio)); ValueError when it cannot answer audio.
    model_kind: str
    model_marker: str
    load_model: str

    def setting(self, key: str, value) -> tuple[str, object]:
        """One `key=value` as this kind's config holds it: the field `key` names (an alias resolved) and
        `value` coerced to that field's type; ValueError naming the closest key, or the type expected."""
        name = self.key(key)
        return name, typed_value(self.config, name, value)

    def canonical(self, values: dict) -> dict:
        """`values` under the fields their keys name (aliases resolved); ValueError for an unknown key or
        an alias beside its own field."""
        return canonical_values(values, self.key)

    def config_from(self, values: dict):
        """The typed config; ValueError or TypeError naming the bad key or value."""
        return self.config.from_dict(values)

    def run_function(self) -> Callable:
        return _import(self.run)

    def load_saved_model(self, directory: str | Path):
        return _import(self.load_model)(Path(directory))


KINDS: dict[str, TrialKind] = {}


def register(kind: TrialKind) -> TrialKind:
    if kind.name in KINDS:
        raise ValueError(f"trial kind {kind.name!r} is registered already")
    KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    KINDS.pop(name, None)


def _finetune_epochs(cfg: TrialConfig) -> int:
    # The recipe counts a stage's partial last pass as an epoch.
    return sum(math.ceil(stage.epochs) for stage in cfg.stage_list())


register(
    TrialKind(
        name=FINETUNE,
        config=TrialConfig,
        run="workers.finetune.recipe:run_trial",
        resumable=True,
        max_epochs=_finetune_epochs,
        key=canonical_key,
        model_kind=FINETUNED_MODEL_KIND,
        model_marker="",
        load_model="workers.finetune.serving:load_saved_model",
    )
)
register(
    TrialKind(
        name=FEATURES,
        config=FeaturesConfig,
        run="workers.acoustic.trial:run_features_trial",
        resumable=False,
        max_epochs=lambda cfg: 1,  # one fit, one report
        key=lambda key: check_key(FeaturesConfig, key),
        model_kind=FEATURES_MODEL_KIND,
        model_marker=FEATURES_MODEL_FILE,
        load_model="workers.acoustic.trial:load_saved_model",
    )
)
register(
    TrialKind(
        name=TEXT,
        config=TextConfig,
        run="workers.text.trial:run_text_trial",
        resumable=False,
        max_epochs=lambda cfg: cfg.epochs,
        key=lambda key: check_key(TextConfig, key, TEXT_KEY_ALIASES),
        model_kind=TEXT_MODEL_KIND,
        model_marker=TEXT_MODEL_FILE,
        load_model="workers.text.model:load_saved_model",
    )
)


def trial_kind(name: str) -> TrialKind:
    if name not in KINDS:
        raise ValueError(f"unknown trial kind {name!r}; known: {', '.join(KINDS)}")
    return KINDS[name]


def kind_of_saved_model(directory: str | Path) -> TrialKind:
    """The kind whose marker file the directory holds; the kind without a marker (fine-tuning) otherwise."""
    directory = Path(directory)
    for kind in KINDS.values():
        if kind.model_marker and (directory / kind.model_marker).exists():
            return kind
    return next(kind for kind in KINDS.values() if not kind.model_marker)


def saved_model_kind(directory: str | Path) -> str:
    """What a saved model directory holds: FEATURES_MODEL_KIND, TEXT_MODEL_KIND or FINETUNED_MODEL_KIND."""
    return kind_of_saved_model(directory).model_kind


def model_markers() -> tuple[str, ...]:
    """The marker files of the kinds whose saved models have one (predict searches a directory for them)."""
    return tuple(kind.model_marker for kind in KINDS.values() if kind.model_marker)
