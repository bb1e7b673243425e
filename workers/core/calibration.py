"""How far a model's confidence can be trusted: expected calibration error and reliability diagrams.

Confidence is the top softmax probability. The paper's ethics section proposes abstaining below a
confidence threshold (80%); these numbers, logged per held-out set, are what a user reads to
choose that threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workers.core.phases import Phase, phased

NUM_BINS = 15  # the usual choice since Guo et al. (2017), "On calibration of modern neural networks"
DEFAULT_THRESHOLD = 0.8  # the paper's ethics section: below 80% confidence, ask a person


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width confidence bins over [0, 1]; empty bins hold NaN accuracy and confidence."""

    edges: np.ndarray  # [num_bins + 1]
    counts: np.ndarray  # [num_bins] clips per bin
    accuracy: np.ndarray  # [num_bins] share of correct predictions in the bin
    confidence: np.ndarray  # [num_bins] mean top probability in the bin

    @property
    def ece(self) -> float:
        filled = self.counts > 0
        if not filled.any():
            return 0.0
        weights = self.counts[filled] / self.counts.sum()
        return float(np.sum(weights * np.abs(self.accuracy[filled] - self.confidence[filled])))


def reliability_bins(y_true: np.ndarray, probs: np.ndarray, num_bins: int = NUM_BINS) -> ReliabilityBins:
    """Bin clips by confidence (the top probability); bins are (lo, hi], the first one [0, hi]."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1) if len(probs) else np.zeros(0)
    correct = (probs.argmax(axis=1) == np.asarray(y_true)) if len(probs) else np.zeros(0, dtype=bool)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)
    counts = np.bincount(which, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(which, weights=correct.astype(float), minlength=num_bins) / counts
        mean_confidence = np.bincount(which, weights=confidence, minlength=num_bins) / counts
    return ReliabilityBins(edges, counts, accuracy, mean_confidence)


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, num_bins: int = NUM_BINS) -> float:
    """Sum over bins of |accuracy - mean confidence|, weighted by the share of clips in the bin."""
    return reliability_bins(y_true, probs, num_bins).ece


def selective_curve(y_true: np.ndarray, probs: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each threshold: share of clips answered (confidence >= threshold), accuracy on those."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    answered = confidence[None, :] >= thresholds[:, None]
    coverage = answered.mean(axis=1) if len(confidence) else np.zeros(len(thresholds))
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = (answered & correct[None, :]).sum(axis=1) / answered.sum(axis=1)
    return coverage, accuracy


def calibration_metrics(set_name: str, y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    return {f"{set_name}/ece": expected_calibration_error(y_true, probs)}


@phased(Phase.FIGURES)
def reliability_figure(
    y_true: np.ndarray, probs: np.ndarray, title: str, threshold: float = DEFAULT_THRESHOLD, num_bins: int = NUM_BINS
):
    """Left: reliability diagram (accuracy per confidence bin against the diagonal) over the share of
    clips per bin. Right: what abstaining below a threshold costs (share answered) and buys (accuracy).
    """
    import matplotlib

    matplotlib.use("Agg")  # headless workers

    import matplotlib.pyplot as plt

    bins = reliability_bins(y_true, probs, num_bins)
    centers = (bins.edges[:-1] + bins.edges[1:]) / 2
    width = bins.edges[1] - bins.edges[0]
    filled = bins.counts > 0
    fig = plt.figure(figsize=(9, 4.4), dpi=100)
    grid = fig.add_gridspec(2, 2, height_ratios=(3, 1), hspace=0.08, wspace=0.25)
    diagram = fig.add_subplot(grid[0, 0])
    histogram = fig.add_subplot(grid[1, 0], sharex=diagram)
    selective = fig.add_subplot(grid[:, 1])

    diagram.bar(
        centers[filled], bins.accuracy[filled], width=width * 0.92, color="tab:blue", alpha=0.8, label="accuracy in bin"
    )
    diagram.scatter(
        centers[filled],
        bins.confidence[filled],
        marker="_",
        s=120,
        color="tab:red",
        zorder=3,
        label="mean confidence in bin",
    )
    diagram.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    diagram.set_ylim(0, 1)
    diagram.set_ylabel("accuracy")
    diagram.set_title(f"reliability: ECE {bins.ece:.3f} ({num_bins} bins)", fontsize=10)
    diagram.legend(loc="upper left", fontsize=7)
    diagram.tick_params(labelbottom=False)
    histogram.bar(centers, bins.counts / max(bins.counts.sum(), 1), width=width * 0.92, color="gray")
    histogram.set_xlim(0, 1)
    histogram.set_ylabel("share", fontsize=8)
    histogram.set_xlabel("confidence (top probability)")

    thresholds = np.linspace(0.0, 1.0, 101)
    coverage, accuracy = (
        selective_curve(y_true, probs, thresholds) if len(probs) else (thresholds * 0, thresholds * np.nan)
    )
    selective.plot(thresholds, coverage, color="tab:green", label="share of clips answered")
    selective.plot(thresholds, accuracy, color="tab:blue", label="accuracy on answered clips")
    selective.axvline(threshold, color="black", linestyle=":", linewidth=1)
    at = int(round(threshold * 100))
    answered_accuracy = "–" if np.isnan(accuracy[at]) else f"{accuracy[at]:.0%}"
    selective.set_title(
        f"abstaining below {threshold:.2f}: answers {coverage[at]:.0%}, accuracy {answered_accuracy}", fontsize=10
    )
    selective.set_xlim(0, 1)
    selective.set_ylim(0, 1.02)
    selective.set_xlabel("confidence threshold")
    selective.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=7, frameon=False)
    fig.suptitle(title)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.86, bottom=0.2)
    return fig
