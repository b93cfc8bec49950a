"""Held-out metrics of a trained verifier, published with its version record."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from statistics import fmean

from services.common.samples import BASE_ROUND, LabelledSample
from services.tasks.toy_models.metrics import roc_auc

log = logging.getLogger(__name__)


def held_out_metrics(samples: Sequence[LabelledSample], scores: Sequence[float]) -> dict[str, float]:
    """AUC, accuracy and balanced accuracy at score 0, mean score by label; per round AUC where both labels occur.

    A held-out set with one label only (tiny data) gets accuracy and its mean score, without AUC: the job still
    publishes, and the missing ``auc`` says why it is not reported.
    """
    labels = [s.correct for s in samples]
    if not samples:
        raise ValueError("the held-out set is empty; raise held_out_fraction or add samples")
    if all(labels) or not any(labels):
        log.warning("held-out set of %d samples has one label only: no AUC", len(samples))
        label = "correct" if labels[0] else "incorrect"
        return {
            "accuracy": fmean((v > 0) == y for v, y in zip(scores, labels, strict=True)),
            f"mean_score_{label}": fmean(scores),
            "held_out_samples": float(len(samples)),
            "held_out_correct_fraction": fmean(labels),
        }
    correct_scores = [v for v, y in zip(scores, labels, strict=True) if y]
    incorrect_scores = [v for v, y in zip(scores, labels, strict=True) if not y]
    true_positive_rate = fmean(v > 0 for v in correct_scores)
    true_negative_rate = fmean(v <= 0 for v in incorrect_scores)
    metrics = {
        "auc": roc_auc(scores, labels),
        "accuracy": fmean((v > 0) == y for v, y in zip(scores, labels, strict=True)),
        "balanced_accuracy": (true_positive_rate + true_negative_rate) / 2,
        "mean_score_correct": fmean(correct_scores),
        "mean_score_incorrect": fmean(incorrect_scores),
        "held_out_samples": float(len(samples)),
        "held_out_correct_fraction": fmean(labels),
    }
    for round_ in sorted({s.round for s in samples}):
        in_round = [(v, s.correct) for v, s in zip(scores, samples, strict=True) if s.round == round_]
        round_labels = [y for _, y in in_round]
        if any(round_labels) and not all(round_labels):
            name = "auc_base" if round_ == BASE_ROUND else f"auc_round{round_}"
            metrics[name] = roc_auc([v for v, _ in in_round], round_labels)
    return metrics
