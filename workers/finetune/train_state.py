"""Where a fine-tuning trial is and what its adaptive learning rate remembers (a checkpoint's train_state.json),
and the paper's rule that updates it after each evaluation round."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from workers.finetune.config import TrialConfig
from workers.finetune.resume_state import capture_rng


@dataclass
class TrainState:
    """Where a trial continues and what the adaptive learning rate remembers: a checkpoint's train_state.json.

    The position is always the next batch to train, so a resumed trial continues exactly there.
    """

    stage_index: int = 0  # the stage being trained (len(stages): training is over)
    stage_epoch: int = 0  # epochs of that stage already finished
    epoch_batches_done: int = 0  # planned batches of the current epoch already trained
    epoch_rng_state: dict = field(default_factory=dict)  # numpy PCG64 state the current epoch is planned from
    step: int = 0  # optimizer steps taken in the whole trial
    epoch: int = 0  # epochs finished in the whole trial (a stage's last, partial epoch counts)
    # Every random generator (python, numpy, torch CPU and CUDA: dropout, layerdrop, SpecAugment) when
    # saved, so a resumed trial draws what the uninterrupted one drew (workers.finetune.resume_state); {}: unset
    rng_state: dict = field(default_factory=dict)
    # The paper's adaptive learning rate and early stopping (record_evaluation)
    lr_scale: float = 1.0  # product of the adaptive decays (x lr_decay_factor each)
    last_val_loss: float = math.inf
    last_val_accuracy: float = 0.0
    rounds_rising: int = 0  # consecutive evaluation rounds whose val loss rose
    rounds_since_best: int = 0
    best_val_loss: float = math.inf
    stopped_early: bool = False  # the current stage ends after this batch

    @classmethod
    def fresh(cls, seed: int) -> TrainState:
        return cls(epoch_rng_state=np.random.default_rng(seed).bit_generator.state)

    def after_epoch(self, next_epoch_rng_state: dict, stage_over: bool) -> TrainState:
        """Where training continues once the current epoch (and, when `stage_over`, its stage) is over."""
        return dataclasses.replace(
            self,
            stage_index=self.stage_index + 1 if stage_over else self.stage_index,
            stage_epoch=0 if stage_over else self.stage_epoch + 1,
            epoch_batches_done=0,
            epoch_rng_state=next_epoch_rng_state,
            epoch=self.epoch + 1,
        )

    def with_rng(self) -> TrainState:
        """This state with every random generator as it is now, for a checkpoint."""
        return dataclasses.replace(self, rng_state=capture_rng())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> TrainState:
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [name for name in names if name not in saved]
        if missing:
            raise ValueError(f"train_state.json lacks {missing}: it was saved by another version of the recipe")
        return cls(**{name: saved[name] for name in names})


def record_evaluation(state: TrainState, cfg: TrialConfig, val_loss: float, val_accuracy: float) -> bool:
    """The paper's adaptive learning rate and early stopping, after one evaluation round.

    Val loss that rose for more than `lr_decay_patience` consecutive rounds multiplies the
    learning rate by `lr_decay_factor` (and the count starts again); `early_stop_patience` rounds
    without a new best end the stage. Returns whether this round is the best so far.
    """
    state.rounds_rising = state.rounds_rising + 1 if val_loss > state.last_val_loss else 0
    state.last_val_loss = val_loss
    state.last_val_accuracy = val_accuracy
    if state.rounds_rising > cfg.lr_decay_patience:
        state.lr_scale *= cfg.lr_decay_factor
        state.rounds_rising = 0
    if val_loss < state.best_val_loss:
        state.best_val_loss = val_loss
        state.rounds_since_best = 0
        return True
    state.rounds_since_best += 1
    state.stopped_early = 0 < cfg.early_stop_patience < state.rounds_since_best
    return False
