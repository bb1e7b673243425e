"""Typed trial configuration: every knob a sweep can tune, with its meaning.

Pure dataclasses (no torch), so the driver can validate `--set key=value` and search spaces
without importing training code.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

TRAINABLE_PARTS = ("head", "transformer", "all_but_cnn", "all")

# Named start checkpoints; anything else is a hub id or a local directory.
START_MODELS: dict[str, str] = {
    "finer": "jonatasgrosman/wav2vec2-large-xlsr-53-english",
    "vanilla": "facebook/wav2vec2-large-xlsr-53",
}


@dataclass(frozen=True)
class Stage:
    """One stage of a freeze schedule."""

    trainable: str  # one of TRAINABLE_PARTS
    epochs: float
    learning_rate: float
    batch_size: int

    def __post_init__(self) -> None:
        if self.trainable not in TRAINABLE_PARTS:
            raise ValueError(f"stage trainable {self.trainable!r} is not one of {TRAINABLE_PARTS}")
        if self.epochs <= 0 or self.learning_rate <= 0 or self.batch_size < 1:
            raise ValueError(f"stage needs epochs > 0, learning_rate > 0, batch_size >= 1: {self}")


def schedule_stages(name: str, learning_rate: float, batch_size: int) -> list[Stage]:
    """The named freeze schedules, scaled to a trial's learning rate and batch size.

    The paper used learning_rate=1e-4 and batch_size=8 for both starts.
    """
    presets = {
        # Finer: head alone 1 epoch, then everything but the CNN feature encoder 1 epoch.
        "paper_finer": [
            Stage("head", 1, learning_rate, batch_size),
            Stage("all_but_cnn", 1, learning_rate, batch_size),
        ],
        # Vanilla: 2 epochs, then lr x0.1 and batch 8 -> 10 for 2 more "to smooth the curve".
        "paper_vanilla": [
            Stage("all_but_cnn", 2, learning_rate, batch_size),
            Stage("all_but_cnn", 2, learning_rate * 0.1, batch_size + 2),
        ],
        "full": [Stage("all_but_cnn", 2, learning_rate, batch_size)],
        "head_only": [Stage("head", 2, learning_rate, batch_size)],
    }
    if name not in presets:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(presets)}")
    return presets[name]


SCHEDULES = ("paper_finer", "paper_vanilla", "full", "head_only")


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs. Search spaces override fields by name."""

    # Data
    data_dir: str = ""  # shard directory (absolute path; filled in by the driver)
    train_speakers: tuple[str, ...] = ("0011", "0012", "0013", "0014")
    eval_sets: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"test_en": ("0015",)})
    val_fraction: float = 0.1  # of the training speakers' clips, held out for validation
    max_seconds: float = 0.0  # crop training clips to this length (0: no crop)
    # Share of English clips in each training epoch, 0..1 (None: as the training speakers come).
    english_fraction: float | None = None
    # Model
    start: str = "tiny"  # 'tiny' (random, built from config), 'finer', 'vanilla', hub id or directory
    init_from: str = ""  # a saved emotion model (workers.checkpoint) to start from instead; head included
    head_dropout: float = 0.1
    # Schedule: a named preset scaled by learning_rate and batch_size, or explicit stages.
    schedule: str = "paper_finer"
    learning_rate: float = 1e-4
    batch_size: int = 8
    stages: tuple[dict, ...] = ()  # explicit stages (dicts of Stage fields); overrides schedule
    # No training at all: evaluate the start model (e.g. transfer_zh's zero-shot trial of its base).
    evaluate_only: bool = False
    epoch_scale: float = 1.0  # multiplies every stage's length (tiny models need more epochs)
    # The paper's adaptive learning rate and early stopping.
    eval_every_steps: int = 10
    lr_decay_patience: int = 2  # rounds of rising val loss tolerated before decaying
    lr_decay_factor: float = 0.1
    early_stop_patience: int = 0  # rounds without a new best val loss before stopping (0: never)
    # Run
    seed: int = 0
    num_threads: int = 1  # torch CPU threads; the driver sets it to the trial's CPUs

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.english_fraction is not None and not 0.0 <= self.english_fraction <= 1.0:
            raise ValueError(f"english_fraction must be in [0, 1] (or None), got {self.english_fraction}")
        if not self.eval_sets:
            raise ValueError("eval_sets must name at least one held-out set")
        overlap = {s for speakers in self.eval_sets.values() for s in speakers} & set(self.train_speakers)
        if overlap:
            raise ValueError(f"speakers {sorted(overlap)} are in both training and a held-out set")
        self.stage_list()  # validate the schedule early

    def stage_list(self) -> list[Stage]:
        if self.evaluate_only:
            return []
        stages = [Stage(**s) for s in self.stages] if self.stages else schedule_stages(
            self.schedule, self.learning_rate, self.batch_size)
        return [dataclasses.replace(s, epochs=s.epochs * self.epoch_scale) for s in stages]

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict) -> "TrialConfig":
        """Build from plain values (a Tune config), with a clear error for unknown keys."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid keys: {', '.join(cls.field_names())}")
        return cls(**{k: _coerce(cls, k, v) for k, v in values.items()})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _coerce(cls: type, name: str, value):
    """Turn lists (JSON, Tune) back into the tuples the dataclass declares."""
    hint = typing.get_type_hints(cls)[name]
    origin = typing.get_origin(hint)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin is dict and isinstance(value, dict):
        return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value
