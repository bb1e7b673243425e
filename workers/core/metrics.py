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
from dataclasses import dataclass

import numpy as np

from shards.schema import EMOTIONS
from workers.core.calibration import expected_calibration_error
from workers.core.phases import Phase, phased
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
    class_scores(y_true, y_pred, labels, set_name)  # a clear error for an empty or mismatched set
    return {
        Key.set_metric(set_name, metric): value
        for function in SET_METRICS.values()
        for metric, value in function(y_true, y_pred, probabilities, labels).items()
    }


def classification_metrics(
    set_name: str, y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str] = EMOTIONS
) -> dict[str, float]:
    """Flat metric dict, e.g. `test_en/accuracy`, `test_en/uar`, `test_en/<label>/f1` for each of `labels`."""
    scores = classification_scores(y_true, y_pred, labels, set_name)
    return {Key.set_metric(set_name, k): v for k, v in scores.items()}


def classification_scores(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str] = EMOTIONS, set_name: str = "the evaluation set"
) -> dict[str, float]:
    """Accuracy, macro precision and F1, weighted F1, UAR, and precision/recall/F1/support per label.

    Macro averages (`macro_precision`, `macro_f1`, `uar`) are `ClassScores`' one definition."""
    scores = class_scores(y_true, y_pred, labels, set_name)
    metrics = {
        Key.ACCURACY: scores.accuracy,
        "macro_precision": scores.macro("precision"),
        "macro_f1": scores.macro("f1"),
        "weighted_f1": scores.weighted("f1"),
        # Unweighted accuracy (UAR) is macro recall; the usual SER headline next to accuracy.
        "uar": scores.macro("recall"),
    }
    for i, emotion in enumerate(labels):
        metrics[f"{emotion}/precision"] = float(scores.precision[i])
        metrics[f"{emotion}/recall"] = float(scores.recall[i])
        metrics[f"{emotion}/f1"] = float(scores.f1[i])
        metrics[f"{emotion}/support"] = float(scores.support[i])
    return metrics


@dataclass(frozen=True)
class ClassScores:
    """Per-class precision, recall, F1 and support over every label (class i = labels[i]), and the averages.

    The one definition of the macro averages, read by the logged metrics and the classification report
    (its 'macro avg' row) alike:
    - macro precision and macro F1: the mean over the classes that occur in the set's truth or in its
      predictions (sklearn's own class set for `f1_score(y_true, y_pred, average="macro")`): a class
      without clips that the model never predicts is left out; one it wrongly predicts counts with F1 0;
    - UAR (macro recall): the mean over the classes that occur in the truth (a class without clips has
      no recall). A held-out speaker without Surprise clips is not charged a zero for Surprise.
    The weighted averages weigh each class by its clips (classes without clips weigh nothing)."""

    labels: tuple[str, ...]
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray
    predicted: np.ndarray  # clips predicted as each class
    accuracy: float

    def macro(self, stat: str) -> float:
        averaged = self.support > 0 if stat == "recall" else (self.support > 0) | (self.predicted > 0)
        return float(getattr(self, stat)[averaged].mean())

    def weighted(self, stat: str) -> float:
        weights = self.support / max(self.support.sum(), 1)  # summed in this order, as the logged values always were
        return float((getattr(self, stat) * weights).sum())


def class_scores(
    y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str] = EMOTIONS, set_name: str = "the evaluation set"
) -> ClassScores:
    """Scores of predictions `y_pred` (class indices) against `y_true`; ValueError for a set without clips."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        raise ValueError(
            f"{set_name} has no clips to evaluate: check its speakers (eval_sets) and, for another corpus, "
            "its label map (eval_label_map)"
        )
    if len(y_true) != len(y_pred):
        raise ValueError(f"{set_name}: {len(y_true)} labels but {len(y_pred)} predictions")
    hits = np.diag(confusion(y_true, y_pred, labels))
    predicted, support = _counts(y_pred, len(labels)), _counts(y_true, len(labels))
    # sklearn's precision_recall_fscore_support(zero_division=0), its formulas included (F1 = 2 tp / (2 tp + fp
    # + fn)), in numpy: importing sklearn cost a fresh trial worker 0.5-2.3 s of CPU for five divisions.
    precision = _divided(hits, predicted)
    recall = _divided(hits, support)
    f1 = _divided(2 * hits, support + predicted)
    return ClassScores(tuple(labels), precision, recall, f1, support, predicted, float(np.mean(y_true == y_pred)))


def _counts(classes_of_clips: np.ndarray, classes: int) -> np.ndarray:
    """Clips per class index in range(classes) (indices outside it are not counted)."""
    indices = np.asarray(classes_of_clips).astype(np.int64)
    return np.bincount(indices[(indices >= 0) & (indices < classes)], minlength=classes)


def _divided(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator as floats, 0 where the denominator is 0."""
    out = np.zeros(len(numerator), dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def report_text(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str] = EMOTIONS) -> str:
    """The paper's table (Tables 1-5) as text, laid out as sklearn's classification_report, from `report_dict`."""
    report = report_dict(y_true, y_pred, labels)
    width = max(len(name) for name in [*labels, "weighted avg"])
    head = f"{'':>{width}s} {'precision':>9s} {'recall':>9s} {'f1-score':>9s} {'support':>9s}"
    lines = [head, ""]
    for name in labels:
        row = report[name]
        lines.append(
            f"{name:>{width}s} {row['precision']:>9.2f} {row['recall']:>9.2f} {row['f1-score']:>9.2f} "
            f"{int(row['support']):>9d}"
        )
    total = int(report["macro avg"]["support"])
    lines += ["", f"{'accuracy':>{width}s} {'':>9s} {'':>9s} {report['accuracy']:>9.2f} {total:>9d}"]
    for name in ("macro avg", "weighted avg"):
        row = report[name]
        lines.append(
            f"{name:>{width}s} {row['precision']:>9.2f} {row['recall']:>9.2f} {row['f1-score']:>9.2f} {total:>9d}"
        )
    return "\n".join(lines) + "\n"


def report_dict(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str] = EMOTIONS) -> dict:
    """The same table in sklearn's classification_report dict shape (per label, 'accuracy', 'macro avg',
    'weighted avg'), its averages by `ClassScores`' definition: the report reads them instead of recomputing."""
    scores = class_scores(y_true, y_pred, labels)
    report: dict = {
        name: {
            "precision": float(scores.precision[i]),
            "recall": float(scores.recall[i]),
            "f1-score": float(scores.f1[i]),
            "support": float(scores.support[i]),
        }
        for i, name in enumerate(labels)
    }
    report["accuracy"] = scores.accuracy
    total = float(scores.support.sum())
    for name, average in (("macro avg", scores.macro), ("weighted avg", scores.weighted)):
        report[name] = {
            "precision": average("precision"),
            "recall": average("recall"),
            "f1-score": average("f1"),
            "support": total,
        }
    return report


def confusion(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str] = EMOTIONS) -> np.ndarray:
    """Clip counts [true class, predicted class] over the classes of `labels` (sklearn's confusion_matrix with
    labels=range(len(labels)): a clip whose true or predicted index is outside them is not counted)."""
    classes = len(labels)
    y_true = np.asarray(y_true).astype(np.int64)
    y_pred = np.asarray(y_pred).astype(np.int64)
    inside = (y_true >= 0) & (y_true < classes) & (y_pred >= 0) & (y_pred < classes)
    cells = np.bincount(y_true[inside] * classes + y_pred[inside], minlength=classes * classes)
    return cells.reshape(classes, classes)


@phased(Phase.FIGURES)
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
