"""Expected calibration error, reliability bins, the abstention curve, and the figure a trial logs."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.core.calibration import (
    NUM_BINS,
    calibration_metrics,
    expected_calibration_error,
    reliability_bins,
    reliability_figure,
    selective_curve,
)


def confident(labels: list[int], predicted: list[int], confidence: float, num_classes: int = 5) -> np.ndarray:
    """Probabilities whose top class is `predicted` with `confidence`, the rest spread evenly."""
    probs = np.full((len(labels), num_classes), (1 - confidence) / (num_classes - 1))
    probs[np.arange(len(labels)), predicted] = confidence
    return probs


def test_perfectly_confident_and_right_has_zero_error():
    labels = [0, 1, 2, 3, 4]
    assert expected_calibration_error(np.array(labels), confident(labels, labels, 1.0)) == 0.0


def test_overconfidence_is_the_gap_between_confidence_and_accuracy():
    labels = np.array([0] * 10)
    predicted = [0] * 7 + [1] * 3  # 70% right at 90% confidence
    assert expected_calibration_error(labels, confident(list(labels), predicted, 0.9)) == pytest.approx(0.2)


def test_error_is_weighted_by_the_share_of_clips_in_each_bin():
    # 4 clips at 0.95 confidence, all right (gap 0.05); 1 clip at 0.45, wrong (gap 0.45).
    labels = np.array([0, 0, 0, 0, 0])
    probs = np.vstack([confident([0] * 4, [0] * 4, 0.95), confident([0], [1], 0.45)])
    assert expected_calibration_error(labels, probs) == pytest.approx(0.8 * 0.05 + 0.2 * 0.45)
    assert calibration_metrics("test_en", labels, probs) == {"test_en/ece": pytest.approx(0.13)}


def test_bins_are_left_open_and_confidence_one_lands_in_the_last_bin():
    edge = 1 / NUM_BINS
    probs = np.array([[1.0, 0, 0, 0, 0], [edge, 1 - edge, 0, 0, 0][::-1]])
    bins = reliability_bins(np.array([0, 0]), probs)
    assert bins.counts[-1] == 1
    assert bins.counts.sum() == 2
    assert np.isnan(bins.accuracy[bins.counts == 0]).all()


def test_selective_curve_answers_everything_at_zero_and_gets_more_accurate_when_stricter():
    labels = np.array([0] * 10)
    probs = np.vstack([confident([0] * 5, [0] * 5, 0.95), confident([0] * 5, [1] * 5, 0.5)])
    coverage, accuracy = selective_curve(labels, probs, np.array([0.0, 0.8, 0.99]))
    assert coverage.tolist() == [1.0, 0.5, 0.0]
    assert accuracy[0] == pytest.approx(0.5) and accuracy[1] == pytest.approx(1.0)
    assert np.isnan(accuracy[2])  # nothing answered: accuracy undefined, not zero


@settings(max_examples=50, deadline=None)
@given(
    st.integers(1, 60).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 4), min_size=n, max_size=n),
            st.lists(st.lists(st.floats(0.01, 10), min_size=5, max_size=5), min_size=n, max_size=n),
        )
    )
)
def test_error_is_between_the_overall_gap_and_one(case):
    labels, weights = case
    probs = np.array(weights) / np.array(weights).sum(axis=1, keepdims=True)
    labels = np.array(labels)
    ece = expected_calibration_error(labels, probs)
    overall_gap = abs((probs.argmax(1) == labels).mean() - probs.max(1).mean())
    assert overall_gap - 1e-9 <= ece <= 1.0


def test_reliability_figure_draws_diagram_histogram_and_abstention_curve(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=40)
    figure = reliability_figure(rng.integers(0, 5, 40), probs, "test_en (n=40)")
    assert len(figure.axes) == 3
    assert "ECE" in figure.axes[0].get_title() and "abstaining below 0.80" in figure.axes[2].get_title()
    figure.savefig(tmp_path / "reliability.png")
    assert (tmp_path / "reliability.png").stat().st_size > 10_000
