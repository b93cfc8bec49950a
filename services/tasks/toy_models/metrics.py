"""Measurements reported in the model cards: accuracy, jargon rate, AUC."""

from __future__ import annotations

from collections.abc import Sequence


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    negatives = [s for s, y in zip(scores, labels, strict=True) if not y]
    if not positives or not negatives:
        raise ValueError("AUC needs both correct and incorrect samples")
    ranked = sorted((s, y) for s, y in zip(scores, labels, strict=True))
    # Average ranks over ties, then the Mann–Whitney U statistic.
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        average_rank = (i + j + 1) / 2  # ranks are 1-based
        rank_sum += average_rank * sum(1 for _, y in ranked[i:j] if y)
        i = j
    u = rank_sum - len(positives) * (len(positives) + 1) / 2
    return u / (len(positives) * len(negatives))


def accuracy(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0
