"""The evaluation of one set, the same in every trial kind (fine-tuning, acoustic features, transcripts).

A kind produces class probabilities (and the fine-tuning recipe its own mean loss); everything after
that is `evaluate_set`: the loss, every registered per-set metric (workers.core.metrics), and the
artifacts the report reads (classification report as JSON and text, confusion matrix, reliability
diagram), under the names of workers.vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workers.core.calibration import reliability_figure
from workers.core.metrics import confusion, confusion_figure, report_dict, report_text, set_metrics
from workers.core.tracking import RunLogger
from workers.vocabulary import Key


def mean_cross_entropy(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """The `<set>/loss` of a kind that has probabilities only (clipped away from log 0)."""
    if len(y_true) == 0:
        return 0.0
    picked = probabilities[np.arange(len(y_true)), y_true]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


def evaluate_set(
    logger: RunLogger,
    name: str,
    y_true: np.ndarray,
    probabilities: np.ndarray,
    labels: Sequence[str],
    loss: float | None = None,
) -> dict[str, float]:
    """The full metric set of one evaluation set; logs its report, confusion matrix and reliability diagram.

    `probabilities`: [clips, len(labels)], columns in the corpus's label order (ShardReader.labels).
    `loss`: the set's mean cross-entropy as the model computed it (None: from the probabilities).
    """
    if probabilities.shape[1:] != (len(labels),):
        raise ValueError(f"probabilities must have {len(labels)} columns (one per label), got {probabilities.shape}")
    y_pred = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, dtype=np.int64)
    metrics = {Key.set_metric(name, Key.LOSS): mean_cross_entropy(y_true, probabilities) if loss is None else loss}
    metrics.update(set_metrics(name, y_true, y_pred, probabilities, labels))
    log_set_artifacts(logger, name, y_true, y_pred, probabilities, labels)
    return metrics


def log_set_artifacts(
    logger: RunLogger,
    name: str,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    probabilities: np.ndarray,
    labels: Sequence[str],
) -> None:
    """The classification report (text and JSON), the confusion matrix and the reliability diagram of a set."""
    logger.log_text(report_text(y_true, y_pred, labels), Key.classification_report(name, "txt"))
    logger.log_dict(report_dict(y_true, y_pred, labels), Key.classification_report(name))
    title = f"{name} (n={len(y_true)})"
    logger.log_figure(confusion_figure(confusion(y_true, y_pred, labels), title, labels), Key.confusion_matrix(name))
    # Calibration: ECE and a reliability diagram, to choose an abstention threshold for predict.
    logger.log_figure(reliability_figure(y_true, probabilities, title), Key.reliability(name))
