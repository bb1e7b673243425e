"""The fine-tuning trial's training loss against class imbalance: class weights and label smoothing.

The weights come from the training clips' class counts (workers.core.class_balance, the same rule as
the features baseline's). Only the training loss is weighted: evaluation losses (val/loss, which drives
the adaptive learning rate, early stopping and the best model) stay the plain cross-entropy, comparable
between trials whatever their weighting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from workers.core.class_balance import class_counts, class_weights, counts_text
from workers.vocabulary import Tag


@dataclass(frozen=True)
class TrainingLoss:
    """Summed cross-entropy of a micro-batch (the recipe divides by the step's clips), weighted per class."""

    weight: torch.Tensor | None = None  # float32 [classes] on the device; None: every clip counts 1
    label_smoothing: float = 0.0

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(
            logits, labels, weight=self.weight, label_smoothing=self.label_smoothing, reduction="sum"
        )


def training_loss(cfg, train_labels: np.ndarray, labels: tuple[str, ...], device: torch.device) -> TrainingLoss:
    """The loss a trial config asks for, weighted by the class counts of `train_labels` (class indices)."""
    weight = None
    if cfg.class_weights != "none":
        values = class_weights(class_counts(train_labels, len(labels)), cfg.class_weights)
        weight = torch.tensor(values, dtype=torch.float32, device=device)
    return TrainingLoss(weight, cfg.label_smoothing)


def balance_tags(train_labels: np.ndarray, labels: tuple[str, ...], loss: TrainingLoss) -> dict[str, str]:
    """The trial run's view of its imbalance: training clips per class, and the class weights used."""
    tags = {Tag.TRAIN_CLIPS_PER_CLASS: counts_text(class_counts(train_labels, len(labels)), labels)}
    if loss.weight is not None:
        tags[Tag.CLASS_WEIGHT_VALUES] = ", ".join(f"{n} {w:.3f}" for n, w in zip(labels, loss.weight.tolist()))
    return tags
