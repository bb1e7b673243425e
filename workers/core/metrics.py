"""The paper's evaluation: per-class precision/recall/F1/support, accuracy, averages, confusion matrix.

Class index i is `labels[i]`: the corpus's own label set (ShardReader.labels, the model's `.labels`);
ESD's five emotions only where no label set is given.

The per-set metrics every trial kind logs for every evaluation set (workers.core.evaluation) are a
registry: a function (y_true, y_pred, probabilities, labels) -> {metric: value} under a name. A new
per-set metric is its function and one `register_set_metric(...)` line at the end of this module;
its values are logged as `<set>/<metric>` (workers.vocabulary.Key.set_metric).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, precision_recall_fscore_support

from shards.schema import EMOTIONS
from workers.core.calibration import expected_calibration_error
from workers.vocabulary import Key

# (y_true [clips], y_pred [clips], probabilities [clips, labels], labels) -> {metric name within the set: value}
SetMetric = Callable[[np.ndarray, np.ndarray, np.ndarray, Sequence[str]], dict[str, float]]
SET_METRICS: dict[str, SetMetric] = {}


def register_set_metric(name: str, function: SetMetric) -> SetMetric:
    """Add a per-set metric; evaluation runs them in registration order."""
    if name in SET_METRICS:
        raise ValueError(f"per-set metric {name!r} is registered already")
    SET_METRICS[name] = function
    return function


def unregister_set_metric(name: str) -> None:
    SET_METRICS.pop(name, None)


def set_metrics(
    set_name: str, y_true: np.ndarray, y_pred: np.ndarray, probabilities: np.ndarray, labels: Sequence[str]
) -> dict[str, float]:
    """Every registered per-set metric of one evaluation set, as `<set>/<metric>` keys."""
    return {
        Key.set_metric(set_name, metric): value
        for function in SET_METRICS.values()
        for metric, value in function(y_true, y_pred, probabilities, labels).items()
    }


def classification_metrics(
    set_name: str, y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str] = EMOTIONS
) -> dict[str, float]:
    """Flat metric dict, e.g. `test_en/accuracy`, `test_en/uar`, `test_en/<label>/f1` for each of `labels`."""
    return {Key.set_metric(set_name, k): v for k, v in classification_scores(y_true, y_pred, labels).items()}


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str] = EMOTIONS) -> dict[str, float]:
    """Accuracy, macro precision and F1, weighted F1, UAR, and precision/recall/F1/support per label."""
    classes = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    weights = support / max(support.sum(), 1)
    # Macro averages run over the classes that occur (in the truth or the predictions), as
    # sklearn's own default does; UAR over the classes that occur in the truth. A held-out
    # speaker without Surprise clips is then not charged a zero recall for it.
    predicted = np.bincount(np.asarray(y_pred, dtype=np.int64), minlength=len(classes))[: len(classes)]
    occurring = (support > 0) | (predicted > 0)
    present = support > 0
    metrics = {
        Key.ACCURACY: float(np.mean(y_true == y_pred)) if len(y_true) else 0.0,
        "macro_precision": _mean_over(precision, occurring),
        "macro_f1": _mean_over(f1, occurring),
        "weighted_f1": float((f1 * weights).sum()),
        # Unweighted accuracy (UAR) is macro recall; the usual SER headline next to accuracy.
        "uar": _mean_over(recall, present),
    }
    for i, emotion in enumerate(labels):
        metrics[f"{emotion}/precision"] = float(precision[i])
        metrics[f"{emotion}/recall"] = float(recall[i])
        metrics[f"{emotion}/f1"] = float(f1[i])
        metrics[f"{emotion}/support"] = float(support[i])
    return metrics


def _mean_over(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].mean()) if mask.any() else 0.0


def report_text(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str] = EMOTIONS) -> str:
    """The paper's table (Tables 1-5) as text."""
    return classification_report(
        y_true, y_pred, labels=list(range(len(labels))), target_names=list(labels), digits=2, zero_division=0
    )


def report_dict(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str] = EMOTIONS) -> dict:
    """The same table as sklearn's dict (per label, 'accuracy', 'macro avg', 'weighted avg'): the
    report reads its averages from here instead of recomputing them."""
    return classification_report(
        y_true,
        y_pred,
        labels=list(range(len(labels))),
        target_names=list(labels),
        zero_division=0,
        output_dict=True,
    )


def confusion(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str] = EMOTIONS) -> np.ndarray:
    return confusion_matrix(y_true, y_pred, labels=list(range(len(labels))))


def confusion_figure(matrix: np.ndarray, title: str, labels: Sequence[str] = EMOTIONS):
    """A confusion matrix plot with counts and row-normalised shading (true class per row)."""
    import matplotlib

    matplotlib.use("Agg")  # headless workers

    import matplotlib.pyplot as plt

    size = max(5.0, 0.6 * len(labels) + 2)  # 8+ classes (RAVDESS) need room for their names
    fig, ax = plt.subplots(figsize=(size, size * 0.84), dpi=100)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                color="white" if rates[i, j] > 0.5 else "black",
                fontsize=9,
            )
    ax.set_xticks(range(len(labels)), list(labels), rotation=30)
    ax.set_yticks(range(len(labels)), list(labels))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def calibration_scores(
    y_true: np.ndarray, y_pred: np.ndarray, probabilities: np.ndarray, labels: Sequence[str]
) -> dict[str, float]:
    """Expected calibration error of the top probability (workers.core.calibration)."""
    return {"ece": expected_calibration_error(y_true, probabilities)}


def _classification(y_true: np.ndarray, y_pred: np.ndarray, probabilities: np.ndarray, labels: Sequence[str]):
    return classification_scores(y_true, y_pred, labels)


# The per-set metrics, one line each (in this order in every trial's metrics).
register_set_metric("classification", _classification)
register_set_metric("calibration", calibration_scores)
