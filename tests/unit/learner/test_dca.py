"""Step shares of DCA by hand: the sign rule, the blame rule, exact sums."""

import math
import random

import pytest

from services.learner.rl.dca import step_shares, token_advantages_of_steps


def test_positive_advantage_follows_the_rises() -> None:
    # s0 = 0, scores 0.5, 0.25, 1.0 → changes +0.5, −0.25, +0.75; rises 0.5, 0, 0.75 (sum 1.25).
    shares = step_shares(1.0, [0.5, 0.25, 1.0], initial_score=0.0)
    assert shares == pytest.approx([0.4, 0.0, 0.6])
    assert sum(shares) == 1.0


def test_negative_advantage_blames_the_drops() -> None:
    # Same scores, A = −2: only step 2 lowered the score (by 0.25), so it takes all the blame; the step that most
    # convinced the verifier (step 3) takes none.
    shares = step_shares(-2.0, [0.5, 0.25, 1.0], initial_score=0.0)
    assert shares == [0.0, -2.0, 0.0]
    # Drops 0.3 and 0.1 share −1 as 3 : 1.
    assert step_shares(-1.0, [0.7, 0.4, 0.3], initial_score=0.0) == pytest.approx([0.0, -0.75, -0.25])


def test_one_step_takes_everything() -> None:
    assert step_shares(0.7, [0.1], initial_score=0.9) == [0.7]


def test_no_change_of_the_right_sign_is_uniform() -> None:
    shares = step_shares(1.0, [0.3, 0.2, 0.1], initial_score=0.5)  # only drops, but A > 0
    assert shares == pytest.approx([1 / 3] * 3)
    assert sum(shares) == 1.0
    assert step_shares(-0.9, [0.1, 0.2], initial_score=0.0) == pytest.approx([-0.45, -0.45])  # only rises, A < 0
    assert step_shares(0.0, [1.0, -1.0], initial_score=0.0) == [0.0, 0.0]


def test_sum_is_exact_and_no_share_opposes_the_advantage() -> None:
    rng = random.Random(1234)
    for _ in range(1000):
        k = rng.randint(1, 12)
        total = rng.choice([1.0, 0.0, -1.0, 0.1, rng.uniform(-5, 5), rng.uniform(-1e-6, 1e-6)])
        shares = step_shares(total, [rng.uniform(-3, 3) for _ in range(k)], initial_score=rng.uniform(-3, 3))
        assert len(shares) == k
        assert sum(shares) == total
        assert math.fsum(shares) == pytest.approx(total, abs=1e-12)
        # No step earns against the advantage (up to the last share's rounding).
        assert all(share * total >= -1e-12 * total * total for share in shares)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        step_shares(1.0, [], initial_score=0.0)
    with pytest.raises(ValueError):
        step_shares(1.0, [float("nan")], initial_score=0.0)


def test_tokens_of_a_step_carry_k_times_its_share() -> None:
    # Three steps (K = 3) of 2, 3 and 2 tokens; shares 0.4, 0, 0.6 → per token 1.2, 0, 1.8.
    assert token_advantages_of_steps([0.4, 0.0, 0.6], step_ends=[2, 5, 7], num_tokens=7) == pytest.approx(
        [1.2, 1.2, 0.0, 0.0, 0.0, 1.8, 1.8]
    )
    # Equal shares give every token the rollout's advantage: GRPO.
    assert token_advantages_of_steps([0.5, 0.5], [1, 4], 4) == [1.0] * 4


@pytest.mark.parametrize(
    ("shares", "ends", "num_tokens"),
    [([1.0], [0], 3), ([1.0], [4], 3), ([0.5, 0.5], [2, 2], 3), ([1.0], [1, 2], 3), ([1.0], [2], 3)],
)
def test_token_advantages_reject_bad_ends(shares: list[float], ends: list[int], num_tokens: int) -> None:
    with pytest.raises(ValueError):
        token_advantages_of_steps(shares, ends, num_tokens)
