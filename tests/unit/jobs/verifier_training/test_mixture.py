"""The round mixture: held-out split, per-round equal share, 50/50 balance, one-label problems left out."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from services.common.samples import LabelledSample
from services.jobs.verifier_training.mixture import build_mixture, is_held_out


def _samples(round_: int, problems: int, correct_per_problem: int, incorrect_per_problem: int) -> list[LabelledSample]:
    return [
        LabelledSample(problem=f"r{round_} p{p}", solution=f"s{i}", correct=i < correct_per_problem, round=round_)
        for p in range(problems)
        for i in range(correct_per_problem + incorrect_per_problem)
    ]


def test_held_out_split_is_stable_and_close_to_the_fraction() -> None:
    problems = [f"problem {i}" for i in range(20_000)]
    share = sum(is_held_out(p, 0.1) for p in problems) / len(problems)
    assert share == pytest.approx(0.1, abs=0.01)
    assert [is_held_out(p, 0.1) for p in problems[:100]] == [is_held_out(p, 0.1) for p in problems[:100]]


def test_batches_are_balanced_and_rounds_get_equal_shares_whatever_their_size() -> None:
    # Round 0 has 10x the problems of round 1, and mostly correct solutions: shares must still be equal.
    samples = _samples(0, 500, 5, 1) + _samples(1, 50, 1, 3)
    mixture = build_mixture(samples, held_out_fraction=0.1)
    rng = random.Random(0)
    labels: Counter[bool] = Counter()
    rounds: Counter[int] = Counter()
    for _ in range(200):
        for group in mixture.draw_batch(rng, problems_per_batch=16, solutions_per_problem=4):
            assert len(group) == 4
            assert len({s.problem for s in group}) == 1
            assert sum(s.correct for s in group) == 2
            labels.update(s.correct for s in group)
            rounds[group[0].round] += 1
    assert labels[True] == labels[False]
    assert rounds[0] / (rounds[0] + rounds[1]) == pytest.approx(0.5, abs=0.03)


def test_held_out_problems_never_reach_training() -> None:
    mixture = build_mixture(_samples(0, 300, 2, 2), held_out_fraction=0.2)
    trained = {p.problem for problems in mixture.rounds.values() for p in problems}
    held = {s.problem for s in mixture.held_out}
    assert held and trained and not held & trained
    assert len(held) / 300 == pytest.approx(0.2, abs=0.07)


def test_one_label_problems_are_counted_and_left_out() -> None:
    samples = _samples(0, 40, 2, 2) + [
        LabelledSample(problem="all right", solution=str(i), correct=True, round=0) for i in range(4)
    ]
    mixture = build_mixture(samples, held_out_fraction=0.01)
    assert all(p.correct and p.incorrect for p in mixture.rounds[0])
    assert mixture.one_label_problems[0] == (0 if is_held_out("all right", 0.01) else 1)


def test_no_trainable_problem_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="both a correct and an incorrect"):
        build_mixture(_samples(0, 30, 3, 0), held_out_fraction=0.1)
