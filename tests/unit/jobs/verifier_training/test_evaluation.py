"""Held-out metrics on hand-made scores."""

from __future__ import annotations

import pytest

from services.common.samples import LabelledSample
from services.jobs.verifier_training.evaluation import held_out_metrics


def _sample(correct: bool, round_: int = 0) -> LabelledSample:
    return LabelledSample(problem="p", solution="s", correct=correct, round=round_)


def test_metrics_on_hand_made_scores() -> None:
    samples = [_sample(True), _sample(True), _sample(False), _sample(False, 1), _sample(True, 1)]
    scores = [2.0, -0.5, -1.0, 1.0, 3.0]
    metrics = held_out_metrics(samples, scores)
    # Positives {2, -0.5, 3} vs negatives {-1, 1}: 5 of 6 pairs ranked right.
    assert metrics["auc"] == pytest.approx(5 / 6)
    assert metrics["accuracy"] == pytest.approx(3 / 5)  # 2.0, -1.0, 3.0 right at threshold 0
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert metrics["mean_score_correct"] == pytest.approx(1.5)
    assert metrics["mean_score_incorrect"] == pytest.approx(0.0)
    assert metrics["auc_round1"] == pytest.approx(1.0)
    assert "auc_round0" in metrics and metrics["auc_round0"] == pytest.approx(1.0)


def test_one_label_held_out_set_reports_no_auc() -> None:
    metrics = held_out_metrics([_sample(True), _sample(True)], [1.0, -2.0])
    assert "auc" not in metrics
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["mean_score_correct"] == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="empty"):
        held_out_metrics([], [])
