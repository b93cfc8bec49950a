"""Verifier training losses over problem groups (each group: solutions to one problem, half correct)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    scores: torch.Tensor, correct: torch.Tensor, group: torch.Tensor, centering_lambda: float
) -> torch.Tensor:
    """−E[log σ((V(z₁) − V(z₂))·sign(c₁ − c₂))] over same-problem pairs of differing correctness, + λ·E[V²].

    scores, correct (0/1) and group (problem index) are 1-D and aligned. Pairs with equal correctness carry no
    preference and are skipped; the centring term keeps scores near 0 so a threshold at 0 stays meaningful.
    """
    same_problem = group[:, None] == group[None, :]
    preferred = (correct[:, None] > correct[None, :]) & same_problem  # row correct, column incorrect
    if not bool(preferred.any()):
        raise ValueError("a Bradley–Terry batch needs a correct and an incorrect solution to one problem")
    margins = (scores[:, None] - scores[None, :])[preferred]
    return -F.logsigmoid(margins).mean() + centering_lambda * scores.pow(2).mean()


def cross_entropy_loss(scores: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the score (a logit) against correctness."""
    return F.binary_cross_entropy_with_logits(scores, correct.float())
