"""What the baseline trials (acoustic features, transcripts) share with the fine-tuning trial.

The same speaker split as `workers.finetune.recipe.load_trial_data` (training speakers minus a
`val_fraction` held out by utterance-id hash, then the plan's held-out sets), and the same
evaluation of a set: metrics, classification report, confusion matrix, ECE and reliability diagram,
logged under the same names. The baselines produce class probabilities; everything after that is
one function.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shards.batching import holdout
from shards.reader import ShardReader
from workers.core.calibration import calibration_metrics, reliability_figure
from workers.core.metrics import classification_metrics, confusion, confusion_figure, report_text
from workers.core.tracking import RunLogger


@dataclass(frozen=True)
class SpeakerSplit:
    train_rows: np.ndarray
    eval_rows: dict[str, np.ndarray]  # 'val' (held-out clips of training speakers) + the plan's sets


def split_rows(
    reader: ShardReader,
    train_speakers: tuple[str, ...],
    eval_sets: dict[str, tuple[str, ...]],
    val_fraction: float,
    seed: int,
) -> SpeakerSplit:
    """Rows of the training clips, the validation clips and each held-out set (as the fine-tuning trial)."""
    known = set(reader.index.speaker)
    for speaker in (*train_speakers, *(s for group in eval_sets.values() for s in group)):
        if speaker not in known:
            raise ValueError(f"speaker {speaker} is not in {reader.data_dir}; it has {sorted(known)}")
    train_rows, val_rows = holdout(reader.index, reader.index.select(list(train_speakers)), val_fraction, seed)
    eval_rows = {"val": val_rows} if len(val_rows) else {}
    eval_rows.update({name: reader.index.select(list(speakers)) for name, speakers in eval_sets.items()})
    return SpeakerSplit(train_rows, eval_rows)


def mean_cross_entropy(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """The `<set>/loss` the fine-tuning trial logs, from probabilities (clipped away from log 0)."""
    if len(y_true) == 0:
        return 0.0
    picked = probabilities[np.arange(len(y_true)), y_true]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


def evaluate_set(
    logger: RunLogger, name: str, y_true: np.ndarray, probabilities: np.ndarray, labels: tuple[str, ...]
) -> dict[str, float]:
    """The full metric set of one evaluation set; logs its report, confusion matrix and reliability diagram.

    `probabilities`: [clips, len(labels)], columns in the corpus's label order (ShardReader.labels).
    """
    if probabilities.shape[1:] != (len(labels),):
        raise ValueError(f"probabilities must have {len(labels)} columns (one per label), got {probabilities.shape}")
    y_pred = probabilities.argmax(axis=1) if len(probabilities) else np.zeros(0, dtype=np.int64)
    metrics = {f"{name}/loss": mean_cross_entropy(y_true, probabilities)}
    metrics.update(classification_metrics(name, y_true, y_pred, labels))
    metrics.update(calibration_metrics(name, y_true, probabilities))
    logger.log_text(report_text(y_true, y_pred, labels), f"classification_report_{name}.txt")
    logger.log_figure(
        confusion_figure(confusion(y_true, y_pred, labels), f"{name} (n={len(y_true)})", labels),
        f"confusion_matrix_{name}.png",
    )
    logger.log_figure(reliability_figure(y_true, probabilities, f"{name} (n={len(y_true)})"), f"reliability_{name}.png")
    return metrics
