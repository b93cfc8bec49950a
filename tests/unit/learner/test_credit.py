"""DCA at the token level: offsets to tokens, exact sums, and GRPO's advantages when all credit is at the end."""

from __future__ import annotations

import random

import pytest
import torch

from services.learner.credit import dca_token_rewards, rewards_to_go, token_advantages, token_step_ends
from services.learner.policy_loss import group_advantages

# A character-level response "3+4=7.\n7*2=14.\n#### 14" split into tokens of uneven width.
TOKENS = ["3+", "4=7", ".\n", "7*2", "=14.", "\n", "#### ", "14"]


def test_character_offsets_map_to_the_token_that_reaches_them() -> None:
    # Steps end after ".\n" (char 7), after "\n" (char 15) and at the end (char 22).
    assert token_step_ends([7, 15, 22], TOKENS) == [3, 6, 8]
    # An offset inside a token belongs to that token; duplicates collapse.
    assert token_step_ends([2, 3, 4], TOKENS) == [1, 2]


def test_dca_rewards_follow_score_gains_and_sum_to_the_outcome() -> None:
    # Gains from s0 = 0: step 1 +1.0, step 2 -0.5 (no credit), step 3 +3.0 → shares 1/4, 0, 3/4.
    rewards = dca_token_rewards(2.0, [(7, 1.0), (15, 0.5), (22, 3.5)], TOKENS, initial_score=0.0)
    assert rewards == [0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 1.5]
    assert sum(rewards) == 2.0


def test_dca_sums_exactly_on_random_cases() -> None:
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 12)
        tokens = ["x" * rng.randint(1, 3) for _ in range(n)]
        length = sum(map(len, tokens))
        ends = sorted(rng.sample(range(1, length + 1), rng.randint(1, min(4, length))))
        reward = rng.uniform(-3, 3)
        per_token = dca_token_rewards(reward, [(e, rng.gauss(0, 1)) for e in ends], tokens, rng.gauss(0, 1))
        assert len(per_token) == n
        assert sum(per_token) == pytest.approx(reward, abs=1e-12)


def test_with_all_credit_on_the_last_token_advantages_equal_grpo() -> None:
    outcomes = [1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.0, 1.0]
    per_token = [[0.0] * 3 + [r] for r in outcomes]
    per_token_advantages = token_advantages(per_token, outcomes, group_size=4)
    expected = group_advantages(torch.tensor(outcomes), 4).tolist()
    for row, value in zip(per_token_advantages, expected, strict=True):
        assert row == pytest.approx([value] * 4, abs=1e-6)


def test_rewards_to_go() -> None:
    assert rewards_to_go([0.5, 0.0, 1.5]) == [2.0, 1.5, 1.5]
