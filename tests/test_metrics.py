"""The evaluation numbers on a hand-computed, class-imbalanced example (balanced fixtures hide
the difference between macro and weighted averages)."""

from __future__ import annotations

import numpy as np
import pytest

from shards.schema import EMOTIONS
from workers.core.metrics import classification_metrics

# Labels 0..4 = Angry, Happy, Neutral, Sad, Surprise. Truth: 6 Angry, 2 Happy, 2 Neutral, 0 Sad,
# 0 Surprise. Predictions: Angry 5 of 6 right (one called Happy); Happy 1 of 2 (one called
# Neutral); Neutral 2 of 2.
Y_TRUE = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 0, 0, 0, 0, 1, 1, 2, 2, 2])


def test_accuracy_uar_and_macro_vs_weighted_f1_by_hand():
    m = classification_metrics("test", Y_TRUE, Y_PRED)
    # Per class: Angry P=5/5 R=5/6 F1=10/11; Happy P=1/2 R=1/2 F1=1/2; Neutral P=2/3 R=1 F1=4/5.
    f1 = {"Angry": 10 / 11, "Happy": 1 / 2, "Neutral": 4 / 5}
    assert m["test/accuracy"] == pytest.approx(8 / 10)
    assert m["test/uar"] == pytest.approx((5 / 6 + 1 / 2 + 1) / 3)
    assert m["test/macro_f1"] == pytest.approx(sum(f1.values()) / 3)
    assert m["test/weighted_f1"] == pytest.approx((6 * f1["Angry"] + 2 * f1["Happy"] + 2 * f1["Neutral"]) / 10)
    assert m["test/macro_f1"] != pytest.approx(m["test/weighted_f1"])
    assert m["test/macro_precision"] == pytest.approx((1 + 1 / 2 + 2 / 3) / 3)
    for emotion, value in f1.items():
        assert m[f"test/{emotion}/f1"] == pytest.approx(value)


def test_a_class_with_no_clips_has_zero_support_and_does_not_count_in_the_averages():
    m = classification_metrics("test", Y_TRUE, Y_PRED)
    for emotion in ("Sad", "Surprise"):
        assert m[f"test/{emotion}/support"] == 0
        assert m[f"test/{emotion}/recall"] == 0
    assert m["test/Angry/support"] == 6 and m["test/Happy/support"] == 2
    assert set(EMOTIONS) == {k.split("/")[1] for k in m if k.endswith("/support")}


def test_a_wrongly_predicted_absent_class_counts_in_macro_f1_but_not_in_uar():
    y_pred = Y_PRED.copy()
    y_pred[0] = 3  # one Angry clip called Sad: Sad occurs among the predictions only
    m = classification_metrics("test", Y_TRUE, y_pred)
    angry_f1 = 2 * (4 / 4) * (4 / 6) / (4 / 4 + 4 / 6)
    assert m["test/macro_f1"] == pytest.approx((angry_f1 + 1 / 2 + 4 / 5 + 0) / 4)
    assert m["test/uar"] == pytest.approx((4 / 6 + 1 / 2 + 1) / 3)


# Issue 21: the tables (classification report, the summary's and report's paper tables) and the logged
# metrics read one computation. Truth without Sad and Surprise; one Angry clip predicted Sad.
Y_PRED_SAD = np.array([3, 0, 0, 0, 0, 1, 1, 2, 2, 2])


@pytest.mark.parametrize("y_pred", [Y_PRED, Y_PRED_SAD], ids=["absent classes", "absent class predicted"])
def test_the_report_tables_show_the_logged_macro_averages(y_pred):
    from orchestrator.results import PaperRow, TrialRun, paper_rows_from_report, paper_table
    from workers.core.metrics import report_dict, report_text

    logged = classification_metrics("test", Y_TRUE, y_pred)
    expected = (logged["test/macro_precision"], logged["test/uar"], logged["test/macro_f1"])
    report = report_dict(Y_TRUE, y_pred)
    macro = report["macro avg"]
    assert (macro["precision"], macro["recall"], macro["f1-score"]) == pytest.approx(expected)
    assert report["weighted avg"]["f1-score"] == pytest.approx(logged["test/weighted_f1"])
    assert report["accuracy"] == pytest.approx(logged["test/accuracy"])
    text_macro = next(line for line in report_text(Y_TRUE, y_pred).splitlines() if "macro avg" in line)
    assert text_macro.split()[2:5] == [f"{v:.2f}" for v in expected]

    rows = paper_rows_from_report(report)  # the summary's and report's table, from the logged JSON
    assert next(r for r in rows if r.label == "macro avg") == PaperRow("macro avg", *expected, len(Y_TRUE))
    trial = TrialRun("0" * 32, "t", "FINISHED", "s", {}, {}, logged, None, None)  # runs without the JSON
    rebuilt = next(r for r in paper_table(trial, "test") if r.label == "macro avg")
    assert (rebuilt.precision, rebuilt.recall, rebuilt.f1) == pytest.approx(expected)


def test_an_empty_evaluation_set_is_a_clear_error():
    from workers.core.metrics import report_dict

    empty = np.zeros(0, dtype=np.int64)
    with pytest.raises(ValueError, match="test_zh has no clips to evaluate"):
        classification_metrics("test_zh", empty, empty)
    with pytest.raises(ValueError, match="no clips to evaluate"):
        report_dict(empty, empty)


def test_scores_and_confusion_equal_sklearns_on_random_predictions():
    """class_scores and confusion are numpy (a trial worker never imports sklearn): sklearn's own results, also
    with classes that no clip has, that nothing is predicted as, and predictions outside the labels."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    from workers.core.metrics import class_scores, confusion

    rng = np.random.default_rng(7)
    labels = ("a", "b", "c", "d", "e")
    for size in (1, 7, 60, 500):
        y_true = rng.choice([0, 1, 2, 4], size=size)  # class 3 has no clips
        y_pred = rng.choice([0, 1, 3, 4, 5], size=size)  # class 2 never predicted; 5 is no label
        classes = list(range(len(labels)))
        expected = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
        scores = class_scores(y_true, y_pred, labels)
        for got, want in zip((scores.precision, scores.recall, scores.f1, scores.support), expected):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
        np.testing.assert_array_equal(scores.predicted, np.bincount(y_pred, minlength=6)[:5])
        expected_matrix = confusion_matrix(y_true, y_pred, labels=classes)
        np.testing.assert_array_equal(confusion(y_true, y_pred, labels), expected_matrix)
