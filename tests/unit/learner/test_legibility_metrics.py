import pytest

from services.learner.evaluation.legibility_metrics import (
    balanced_best_of_n,
    helpful_accuracy,
    legibility_metrics,
    roles_apart_best_of_n,
    sneaky_fool_rate,
    sneaky_incorrect_rate,
    verifier_auc,
)
from services.learner.evaluation.scored import ScoredSample


def _samples() -> list[ScoredSample]:
    return [
        ScoredSample("a", "helpful", True, 0.9),
        ScoredSample("a", "helpful", True, 0.5),  # helpful-correct mean = (0.9 + 0.5 + 0.4) / 3 = 0.6
        ScoredSample("b", "helpful", True, 0.4),
        ScoredSample("b", "helpful", False, 0.2),
        ScoredSample("a", "sneaky", False, 0.7),  # fools: 0.7 >= 0.6
        ScoredSample("a", "sneaky", False, 0.6),  # fools: equal counts
        ScoredSample("b", "sneaky", False, 0.1),
        ScoredSample("b", "sneaky", False, 0.3),
        ScoredSample("b", "sneaky", True, 0.8),
    ]


def test_rates_by_hand() -> None:
    samples = _samples()
    assert sneaky_incorrect_rate(samples) == 4 / 5
    assert sneaky_fool_rate(samples) == 2 / 4
    assert helpful_accuracy(samples) == 3 / 4


def test_verifier_auc_by_hand() -> None:
    # Correct: 0.9, 0.5, 0.4, 0.8; incorrect: 0.2, 0.7, 0.6, 0.1, 0.3. Pairs where correct outscores incorrect:
    # 0.9 → 5, 0.8 → 5, 0.5 → 3 (0.2, 0.1, 0.3), 0.4 → 3; total 16 of 20.
    assert verifier_auc(_samples()) == 16 / 20


def test_undefined_metrics_are_none() -> None:
    only_helpful = [ScoredSample("a", "helpful", True, 1.0)]
    assert sneaky_incorrect_rate(only_helpful) is None
    assert sneaky_fool_rate(only_helpful) is None
    assert verifier_auc(only_helpful) is None
    assert helpful_accuracy([ScoredSample("a", "sneaky", False, 1.0)]) is None


def test_best_of_two_by_hand() -> None:
    # With n = 2 every qualifying problem draws its one correct and one incorrect sample: no randomness.
    samples = [
        ScoredSample("p1", "helpful", True, 0.9),
        ScoredSample("p1", "helpful", False, 0.1),  # pick correct
        ScoredSample("p2", "helpful", True, 0.2),
        ScoredSample("p2", "helpful", False, 0.8),  # pick incorrect
        ScoredSample("p3", "helpful", True, 0.5),
        ScoredSample("p3", "helpful", False, 0.5),  # tie: half credit
        ScoredSample("p4", "helpful", True, 0.5),  # no incorrect sample: does not qualify
    ]
    result = balanced_best_of_n(samples, n=2)
    assert result.problems == 3
    assert result.accuracy == pytest.approx((1 + 0 + 0.5) / 3)


def test_best_of_four_draws_with_the_seed() -> None:
    # p1: the best correct (0.95) beats every incorrect one, so any draw holding it is right; p2 always right.
    samples = [ScoredSample("p1", "helpful", True, s) for s in (0.95, 0.1, 0.2)]
    samples += [ScoredSample("p1", "helpful", False, s) for s in (0.9, 0.3)]
    samples += [ScoredSample("p2", "helpful", c, s) for c, s in ((True, 1.0), (True, 0.9), (False, 0.0), (False, 0.1))]
    samples += [ScoredSample("p3", "helpful", True, 1.0)] * 3  # only correct samples: skipped
    results = {balanced_best_of_n(samples, n=4, seed=seed).accuracy for seed in range(30)}
    assert results == {0.5, 1.0}  # p1 is right exactly when 0.95 is among its two drawn correct samples
    assert balanced_best_of_n(samples, n=4, seed=5) == balanced_best_of_n(samples, n=4, seed=5)
    assert balanced_best_of_n(samples, n=4).problems == 2


def test_best_of_n_needs_even_n() -> None:
    with pytest.raises(ValueError):
        balanced_best_of_n(_samples(), n=3)
    assert balanced_best_of_n(_samples(), n=8).accuracy is None


def test_summary_leaves_out_undefined() -> None:
    metrics = legibility_metrics(_samples(), best_of_n=2)
    assert metrics["sneaky_fool_rate"] == 0.5
    assert metrics["verifier_auc"] == 0.8
    # a: correct 0.9, 0.5 / incorrect 0.7, 0.6; b: correct 0.4, 0.8 / incorrect 0.2, 0.1, 0.3. Both qualify for n = 2.
    assert metrics["best_of_2_problems"] == 2.0
    assert "best_of_2_accuracy" in metrics
    assert "helpful_accuracy" not in legibility_metrics([ScoredSample("a", "sneaky", False, 1.0)])


def test_best_of_n_with_the_roles_kept_apart_by_hand() -> None:
    # Helpful only: a has no incorrect helpful sample; b: 0.4 (correct) beats 0.2 → 1.0 on one problem.
    apart = roles_apart_best_of_n(_samples(), 2)
    assert (apart["helpful"].accuracy, apart["helpful"].problems) == (1.0, 1)
    # Helpful-correct vs sneaky-incorrect: b's 0.4 beats 0.1 and 0.3; in a, 0.9 beats both sneaky errors but 0.5
    # loses to both, so a scores 1 or 0 by the draw: 1.0 or 0.5 overall, and both occur over seeds.
    assert apart["vs_sneaky"].problems == 2
    assert {roles_apart_best_of_n(_samples(), 2, seed)["vs_sneaky"].accuracy for seed in range(30)} == {0.5, 1.0}
    # The sneaky-correct sample (0.8) never enters the roles-apart picks: it would win b's pooled draw.
    metrics = legibility_metrics(_samples(), best_of_n=2, seed=3)
    assert metrics["best_of_2_helpful_accuracy"] == 1.0
    assert metrics["best_of_2_vs_sneaky_accuracy"] == roles_apart_best_of_n(_samples(), 2, 3)["vs_sneaky"].accuracy
