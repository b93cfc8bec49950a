"""Held-out metrics of a trained verifier, published with its version record."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean

from services.common.samples import LabelledSample
from services.tasks.toy_models.metrics import roc_auc


def held_out_metrics(samples: Sequence[LabelledSample], scores: Sequence[float]) -> dict[str, float]:
    """AUC, accuracy and balanced accuracy at score 0, mean score by label; per round AUC where both labels occur."""
    labels = [s.correct for s in samples]
    if all(labels) or not any(labels):
        raise ValueError(
            f"the held-out set ({len(samples)} samples) needs both correct and incorrect solutions; "
            "raise held_out_fraction or add samples"
        )
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
            metrics[f"auc_round{round_}"] = roc_auc([v for v, _ in in_round], round_labels)
    return metrics
