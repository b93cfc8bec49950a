"""The verifier losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from services.jobs.verifier_training.losses import bradley_terry_loss, cross_entropy_loss


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_bradley_terry_pairs_only_differing_labels_of_the_same_problem() -> None:
    # Problem 0: correct 2.0, incorrect 0.5 and -1.0 → pairs (2.0-0.5), (2.0+1.0).
    # Problem 1: correct 0.0, incorrect 1.0 → pair (0.0-1.0). Cross-problem pairs are ignored.
    scores = torch.tensor([2.0, 0.5, -1.0, 0.0, 1.0])
    correct = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0])
    group = torch.tensor([0, 0, 0, 1, 1])
    pairs = [2.0 - 0.5, 2.0 + 1.0, 0.0 - 1.0]
    bt = -sum(_log_sigmoid(m) for m in pairs) / 3
    centring = 0.1 * sum(v * v for v in [2.0, 0.5, 1.0, 0.0, 1.0]) / 5
    loss = bradley_terry_loss(scores, correct, group, centering_lambda=0.1)
    assert loss.item() == pytest.approx(bt + centring, rel=1e-6)


def test_bradley_terry_is_shift_invariant_without_centring_and_penalised_with_it() -> None:
    scores = torch.tensor([1.0, -1.0])
    correct = torch.tensor([1.0, 0.0])
    group = torch.tensor([0, 0])
    base = bradley_terry_loss(scores, correct, group, 0.0).item()
    assert bradley_terry_loss(scores + 5, correct, group, 0.0).item() == pytest.approx(base)
    assert bradley_terry_loss(scores + 5, correct, group, 0.01).item() == pytest.approx(base + 0.01 * 26)


def test_bradley_terry_refuses_a_batch_without_pairs() -> None:
    with pytest.raises(ValueError, match="correct and an incorrect"):
        bradley_terry_loss(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 1.0]), torch.tensor([0, 0]), 0.01)


def test_cross_entropy_matches_the_formula() -> None:
    scores, correct = torch.tensor([0.3, -2.0]), torch.tensor([1.0, 0.0])
    expected = -(_log_sigmoid(0.3) + _log_sigmoid(2.0)) / 2
    assert cross_entropy_loss(scores, correct).item() == pytest.approx(expected, rel=1e-6)
