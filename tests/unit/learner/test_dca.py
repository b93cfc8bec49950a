import math
import random

import pytest

from services.learner.dca import step_rewards, token_rewards


def test_proportional_to_positive_gains() -> None:
    # s0 = 0, scores 0.5, 0.25, 1.0 → gains 0.5, 0 (a drop), 0.75; total 1.25.
    rewards = step_rewards(1.0, [0.5, 0.25, 1.0], initial_score=0.0)
    assert rewards == pytest.approx([0.4, 0.0, 0.6])
    assert sum(rewards) == 1.0


def test_negative_outcome() -> None:
    rewards = step_rewards(-2.0, [1.0, 4.0], initial_score=0.0)  # gains 1, 3
    assert rewards == pytest.approx([-0.5, -1.5])
    assert sum(rewards) == -2.0


def test_one_step_takes_everything() -> None:
    assert step_rewards(0.7, [0.1], initial_score=0.9) == [0.7]


def test_no_positive_gain_is_uniform() -> None:
    rewards = step_rewards(1.0, [0.3, 0.2, 0.1], initial_score=0.5)
    assert rewards == pytest.approx([1 / 3] * 3)
    assert sum(rewards) == 1.0
    assert step_rewards(0.9, [0.0, 0.0], initial_score=0.0) == pytest.approx([0.45, 0.45])


def test_sum_is_exact_on_random_cases() -> None:
    rng = random.Random(1234)
    for _ in range(1000):
        k = rng.randint(1, 12)
        reward = rng.choice([1.0, 0.0, -1.0, 0.1, rng.uniform(-5, 5), rng.uniform(-1e-6, 1e-6)])
        scores = [rng.uniform(-3, 3) for _ in range(k)]
        rewards = step_rewards(reward, scores, initial_score=rng.uniform(-3, 3))
        assert len(rewards) == k
        assert sum(rewards) == reward
        assert math.fsum(rewards) == pytest.approx(reward, abs=1e-12)
        # Shares carry R's sign: no step earns against the outcome (up to the last step's rounding).
        assert all(r * reward >= -1e-12 * reward * reward for r in rewards)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        step_rewards(1.0, [], initial_score=0.0)
    with pytest.raises(ValueError):
        step_rewards(1.0, [float("nan")], initial_score=0.0)


def test_token_rewards_on_each_steps_last_token() -> None:
    assert token_rewards([0.4, 0.0, 0.6], step_ends=[2, 5, 7], num_tokens=8) == [
        0.0, 0.4, 0.0, 0.0, 0.0, 0.0, 0.6, 0.0,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("per_step", "ends", "num_tokens"),
    [([1.0], [0], 3), ([1.0], [4], 3), ([0.5, 0.5], [2, 2], 3), ([1.0], [1, 2], 3)],
)
def test_token_rewards_rejects_bad_ends(per_step: list[float], ends: list[int], num_tokens: int) -> None:
    with pytest.raises(ValueError):
        token_rewards(per_step, ends, num_tokens)
