"""What a fine-tuning trial learns (the `task` knob): the loss of a step, of a set, and a set's metrics.

The model's outputs are the class logits, then one value per dimension (EmotionClassifier.outputs):

    categorical  cross-entropy on the logits (the recipe as it always was)
    dimensions   the dimension loss (1 - CCC, or MSE) on the values; the class head is not trained
    both         cross-entropy + dimension_weight x the dimension loss, one shared encoder

A step's loss is a mean over the global batch: cross-entropy summed over a micro-batch and divided
by the batch's clips, the dimension loss (a whole-batch statistic for CCC) weighted by the
micro-batch's share of the batch. A set's loss uses the whole set's CCC.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import torch
from torch import nn

from workers.core.dimensions import dimension_loss, dimension_scores, evaluate_dimensions
from workers.core.evaluation import evaluate_set as evaluate_predictions
from workers.core.tracking import RunLogger
from workers.finetune.config import TrialConfig
from workers.vocabulary import Key, Task


def model_dimensions(cfg: TrialConfig, reader) -> tuple[tuple[str, ...], dict]:
    """The regression outputs a new model gets: the corpus's dimensions unless the task is categorical."""
    if cfg.task == Task.CATEGORICAL:
        return (), {}
    if not reader.dimensions:
        raise ValueError(
            f"task={cfg.task!r} needs a corpus with dimensional labels; {cfg.data_dir} has none "
            "(MSP-Podcast, IEMOCAP, or a table with arousal/valence/dominance columns have them)"
        )
    return tuple(reader.dimensions), dict(reader.dimension_scales)


def check_model(cfg: TrialConfig, model, reader) -> None:
    """A saved model (init_from, a resumed checkpoint) learns a dimensional task only with the corpus's dimensions."""
    if cfg.task != Task.CATEGORICAL and tuple(model.dimensions) != tuple(reader.dimensions):
        raise ValueError(
            f"task={cfg.task!r}: the model predicts dimensions {tuple(model.dimensions)}, the corpus has "
            f"{tuple(reader.dimensions)}; start from a model with the same dimensions, or from `start`"
        )


def targets(reader, rows: np.ndarray, dimensions: Sequence[str]) -> np.ndarray:
    """float32 [len(rows), dimensions]: the clips' values, NaN where the corpus (or the clip) has none."""
    index = getattr(reader, "index", None)
    names = tuple(getattr(reader, "dimensions", ()) or ())
    values = np.full((len(rows), len(dimensions)), np.nan, dtype=np.float32)
    columns = getattr(index, "dimensions", None)
    if columns is None:
        return values
    for i, name in enumerate(dimensions):
        if name in names:
            values[:, i] = columns[rows, names.index(name)]
    return values


def batch_targets(reader, rows: np.ndarray, dimensions: Sequence[str], device) -> torch.Tensor | None:
    """A training batch's true values on the device (None: the model has no dimensions)."""
    return torch.from_numpy(targets(reader, rows, dimensions)).to(device) if dimensions else None


def set_values(
    reader, outputs: list[torch.Tensor], batch_rows: list[np.ndarray], dimensions: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """A set's predicted values ([clips, dimensions], from each batch's regression outputs) and true values."""
    predicted = torch.cat(outputs).float().cpu().numpy() if outputs else np.zeros((0, len(dimensions)), np.float32)
    rows = np.concatenate(batch_rows) if batch_rows else np.zeros(0, dtype=np.int64)
    return predicted, targets(reader, rows, dimensions)


def step_loss(
    cfg: TrialConfig,
    num_labels: int,
    outputs: torch.Tensor,
    labels: torch.Tensor,
    values: torch.Tensor | None,
    num_clips: int,
    cross_entropy: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """This micro-batch's share of the step's mean loss. `cross_entropy`: the summed class loss (class weights,
    label smoothing: workers.finetune.balance.TrainingLoss); None: the plain one."""
    loss = outputs.new_zeros(())
    if cfg.task != Task.DIMENSIONS:
        summed = cross_entropy or partial(nn.functional.cross_entropy, reduction="sum")
        loss = loss + summed(outputs[:, :num_labels], labels) / num_clips
    if cfg.task != Task.CATEGORICAL:
        weight = cfg.dimension_weight if cfg.task == Task.BOTH else 1.0
        share = len(labels) / num_clips
        loss = loss + weight * share * dimension_loss(cfg.dimension_loss)(outputs[:, num_labels:], values)
    return loss


def set_loss(cfg: TrialConfig, cross_entropy: float, y_true: np.ndarray, y_pred: np.ndarray, dimensions) -> float:
    """A set's `<set>/loss`: its mean cross-entropy, its dimension loss (1 - mean CCC, or MSE), or both weighted."""
    if cfg.task == Task.CATEGORICAL:
        return cross_entropy
    if cfg.dimension_loss == "ccc":
        scores = dimension_scores("set", y_true, y_pred, dimensions)
        regression = 1.0 - scores[Key.set_metric("set", Key.CCC)]
    else:
        regression = float(np.nanmean((y_true - y_pred) ** 2)) if len(y_true) else 0.0
    if cfg.task == Task.DIMENSIONS:
        return regression
    return cross_entropy + cfg.dimension_weight * regression


def mean_ccc(y_true: np.ndarray, y_pred: np.ndarray, dimensions) -> float:
    if not len(dimensions):
        return math.nan
    return dimension_scores("set", y_true, y_pred, dimensions)[Key.set_metric("set", Key.CCC)]


def evaluate(
    cfg: TrialConfig, logger: RunLogger, name: str, result, labels: Sequence[str], dimensions: Sequence[str]
) -> dict[str, float]:
    """A set's metrics as the task has them: the class metrics, the dimension metrics, or both (one `<set>/loss`)."""
    metrics: dict[str, float] = {}
    if cfg.task != Task.DIMENSIONS:
        metrics.update(
            evaluate_predictions(logger, name, result.y_true, result.probabilities, labels, loss=result.loss)
        )
    if cfg.task != Task.CATEGORICAL and dimensions and np.isfinite(result.targets).any():
        metrics.update(evaluate_dimensions(logger, name, result.targets, result.values, dimensions, loss=result.loss))
    return metrics
