"""The typed config of the text (transcripts) baseline: a plain dataclass.

Import-light, like workers.finetune.config.TrialConfig; the trial that runs it is workers.text.trial.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from workers.core.kind_config import plain_values, validate_split_config

TINY_ENCODER = "tiny"  # TextConfig.encoder: a random tiny BERT with a tokenizer trained on the corpus
TEXT_MODEL_KIND = "text"
TEXT_MODEL_FILE = "text_model.json"
# Hugging Face's names (TrainingArguments, run_classification.py) for TextConfig's own, as TrialConfig's.
KEY_ALIASES: dict[str, str] = {
    "per_device_train_batch_size": "batch_size",
    "per_device_eval_batch_size": "eval_batch_size",
    "num_train_epochs": "epochs",
    "max_seq_length": "max_length",
    "model_name_or_path": "encoder",
}


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
        """Build from plain values (a Tune config; aliases accepted), with a clear error for unknown keys."""
        return cls(**plain_values(cls, values, KEY_ALIASES))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
