"""The round's stop rule: sneaky-incorrect solutions caught up with helpful-correct ones, on enough of them."""

from services.learner.game.rounds import CAUGHT_UP_MIN_SAMPLES, sneaky_caught_up


def _metrics(sneaky: float, helpful: float, count: int) -> dict[str, float]:
    return {"score_sneaky_incorrect": sneaky, "score_helpful_correct": helpful, "sneaky_incorrect": float(count)}


def test_caught_up_needs_a_higher_mean_on_enough_samples() -> None:
    assert sneaky_caught_up(_metrics(1.0, 0.5, CAUGHT_UP_MIN_SAMPLES))
    assert sneaky_caught_up(_metrics(0.5, 0.5, CAUGHT_UP_MIN_SAMPLES))  # "as high as"
    assert not sneaky_caught_up(_metrics(0.4, 0.5, 32))
    # One lucky sneaky-incorrect sample (the demo's round 0 ended on one) is not the prover catching up.
    assert not sneaky_caught_up(_metrics(1.9, 0.4, 1))


def test_no_scores_no_stop() -> None:
    assert not sneaky_caught_up({})
    assert not sneaky_caught_up({"score_helpful_correct": 0.1, "sneaky_incorrect": 0.0})
