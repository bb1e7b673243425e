"""Dimensional emotion (arousal, valence, dominance): the scores, the training loss, one set's evaluation.

Lin's concordance correlation coefficient is the MSP-Podcast challenge's attribute score, and its
`1 - CCC` the usual training loss (it rewards a prediction's correlation, mean and spread at once,
where MSE lets a model shrink towards the mean). Every kind that predicts dimensions (fine-tuning,
the features baseline) evaluates a set through `evaluate_dimensions`, under workers.vocabulary's names.

A clip without a value for a dimension (NaN: the release gave none) is left out of that dimension's
scores and loss, not of the others'.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workers.core.tracking import RunLogger
from workers.vocabulary import Key

DIMENSION_LOSSES = ("ccc", "mse")


def ccc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Lin's CCC = 2 cov / (var_true + var_pred + (mean_true - mean_pred)^2), population moments; NaN pairs dropped.

    0.0 when undefined (fewer than two clips, or both constant)."""
    t, p = _finite_pairs(y_true, y_pred)
    if len(t) < 2:
        return 0.0
    covariance = np.mean((t - t.mean()) * (p - p.mean()))
    denominator = t.var() + p.var() + (t.mean() - p.mean()) ** 2
    return float(2 * covariance / denominator) if denominator > 0 else 0.0


def pcc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Pearson's correlation; 0.0 when undefined (a constant side or fewer than two clips)."""
    t, p = _finite_pairs(y_true, y_pred)
    if len(t) < 2 or t.std() == 0 or p.std() == 0:
        return 0.0
    return float(np.corrcoef(t, p)[0, 1])


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    t, p = _finite_pairs(y_true, y_pred)
    return float(np.mean(np.abs(t - p))) if len(t) else 0.0


def _finite_pairs(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    keep = np.isfinite(t) & np.isfinite(p)
    return t[keep], p[keep]


def dimension_scores(
    set_name: str, y_true: np.ndarray, y_pred: np.ndarray, dimensions: Sequence[str]
) -> dict[str, float]:
    """`<set>/<dimension>/ccc|pcc|mae` for each dimension and `<set>/ccc`, their mean CCC."""
    y_true, y_pred = np.asarray(y_true).reshape(-1, len(dimensions)), np.asarray(y_pred).reshape(-1, len(dimensions))
    metrics: dict[str, float] = {}
    for i, name in enumerate(dimensions):
        for stat, function in ((Key.CCC, ccc), (Key.PCC, pcc), (Key.MAE, mae)):
            metrics[Key.dimension_metric(set_name, name, stat)] = function(y_true[:, i], y_pred[:, i])
    ccc_values = [metrics[Key.dimension_metric(set_name, d, Key.CCC)] for d in dimensions]
    metrics[Key.set_metric(set_name, Key.CCC)] = float(np.mean(ccc_values)) if ccc_values else 0.0
    return metrics


def evaluate_dimensions(
    logger: RunLogger,
    name: str,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    dimensions: Sequence[str],
    loss: float | None = None,
) -> dict[str, float]:
    """The dimensional scores of one set, and its predictions as an artifact (the report's scatter plots).

    `loss`: the set's `<set>/loss` when the dimensions are all the trial learns (None: leave it to the caller)."""
    metrics = dimension_scores(name, y_true, y_pred, dimensions)
    if loss is not None:
        metrics[Key.set_metric(name, Key.LOSS)] = loss
    logger.log_dict(predictions_record(y_true, y_pred, dimensions), Key.dimension_predictions(name))
    return metrics


def predictions_record(y_true: np.ndarray, y_pred: np.ndarray, dimensions: Sequence[str]) -> dict:
    """{dimension: {"true": [...], "predicted": [...]}} (None where a value is missing), rounded to 4 places."""
    y_true, y_pred = np.asarray(y_true).reshape(-1, len(dimensions)), np.asarray(y_pred).reshape(-1, len(dimensions))

    def values(column: np.ndarray) -> list[float | None]:
        return [round(float(v), 4) if np.isfinite(v) else None for v in column]

    return {d: {"true": values(y_true[:, i]), "predicted": values(y_pred[:, i])} for i, d in enumerate(dimensions)}


# --- the training loss (torch tensors; torch is not imported here, the baselines run without it) ---


def ccc_loss(predicted, target):
    """1 - mean over dimensions of the batch's CCC ([batch, dimensions] tensors; NaN targets left out)."""
    losses = []
    for i in range(target.shape[1]):
        keep = target[:, i].isfinite()
        t, p = target[keep, i].float(), predicted[keep, i].float()
        if t.numel() < 2:
            continue
        covariance = ((t - t.mean()) * (p - p.mean())).mean()
        denominator = t.var(unbiased=False) + p.var(unbiased=False) + (t.mean() - p.mean()) ** 2
        losses.append(1 - 2 * covariance / denominator.clamp(min=1e-8))
    return sum(losses) / len(losses) if losses else predicted.sum() * 0.0


def mse_loss(predicted, target):
    """Mean squared error over the values that exist (NaN targets left out)."""
    keep = target.isfinite()
    if not bool(keep.any()):
        return predicted.sum() * 0.0
    return ((predicted.float()[keep] - target.float()[keep]) ** 2).mean()


def dimension_loss(kind: str):
    """The loss function a `dimension_loss` knob names."""
    if kind not in DIMENSION_LOSSES:
        raise ValueError(f"dimension_loss {kind!r} is not one of {DIMENSION_LOSSES}")
    return ccc_loss if kind == "ccc" else mse_loss
