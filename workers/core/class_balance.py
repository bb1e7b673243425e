"""Class weights against imbalanced training sets, the same for every trial kind.

    none      every clip counts 1 (as before)
    balanced  w_c = n / (k * n_c): inverse class frequency, scikit-learn's class_weight='balanced'
    sqrt      w_c proportional to 1 / sqrt(n_c): a milder correction (as in nkululeko and the
              MSP-Podcast challenge baselines' tempered weights)

n: training clips, n_c: those of class c, k: classes with at least one training clip. Both weightings
keep the mean weight over the training clips at 1 (sum_c n_c w_c = n), so the loss stays on the scale of
the unweighted one and the learning rate keeps its meaning. A class without training clips gets weight
1: no training target has it, the value only has to be finite.
"""

from __future__ import annotations

import numpy as np

CLASS_WEIGHTINGS = ("none", "balanced", "sqrt")


def check_class_weights(mode: str) -> None:
    if mode not in CLASS_WEIGHTINGS:
        raise ValueError(f"class_weights {mode!r} is not one of {CLASS_WEIGHTINGS}")


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Clips per class index 0..num_classes-1."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]


def class_weights(counts: np.ndarray, mode: str) -> np.ndarray:
    """One weight per class (float64) for the class counts of the training clips."""
    check_class_weights(mode)
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.ones(len(counts))
    present = counts > 0
    if mode == "none" or not present.any():
        return weights
    raw = 1.0 / counts[present] if mode == "balanced" else 1.0 / np.sqrt(counts[present])
    # Scaled so that sum_c n_c w_c = n; for 'balanced' this is exactly n / (k n_c).
    weights[present] = raw * counts.sum() / (counts[present] * raw).sum()
    return weights


def counts_text(counts: np.ndarray | dict[str, int], labels: tuple[str, ...] | None = None) -> str:
    """'neutral 120, angry 30, ... (imbalance 4.0x)': clips per class, largest over smallest non-empty."""
    pairs = list(counts.items()) if isinstance(counts, dict) else list(zip(labels or (), (int(c) for c in counts)))
    text = ", ".join(f"{label} {count}" for label, count in pairs)
    present = [count for _, count in pairs if count > 0]
    if len(present) > 1:
        text += f" (imbalance {max(present) / min(present):.1f}x)"
    return text
