"""DCA at the token level: offsets to tokens, the group-relative sign rule, GRPO when there is nothing to split."""

from __future__ import annotations

import math
import random

import pytest
import torch

from services.learner.rl.credit import dca_token_advantages, token_step_ends
from services.learner.rl.policy_loss import group_advantages

# A character-level response "3+4=7.\n7*2=14.\n#### 14" split into tokens of uneven width.
TOKENS = ["3+", "4=7", ".\n", "7*2", "=14.", "\n", "#### ", "14"]
STEP_ENDS = [7, 15, 22]  # after ".\n", after "\n", at the end: tokens [0, 3), [3, 6), [6, 8)


def test_character_offsets_map_to_the_token_that_reaches_them() -> None:
    assert token_step_ends(STEP_ENDS, TOKENS) == [3, 6, 8]
    # An offset inside a token belongs to that token; duplicates collapse.
    assert token_step_ends([2, 3, 4], TOKENS) == [1, 2]


def test_a_group_of_two_by_hand() -> None:
    # Group {correct R = 1, wrong R = 0}: mean 0.5, unbiased std √0.5, so A = ±0.5/√0.5 = ±0.7071.
    advantages = group_advantages(torch.tensor([1.0, 0.0], dtype=torch.float64), 2).tolist()
    a = 0.5 / math.sqrt(0.5)
    assert advantages == pytest.approx([a, -a], abs=1e-5)
    # The correct rollout's verifier scores rise 0.8, 0.1, 0.1: shares 0.8a, 0.1a, 0.1a; each token K = 3 × its
    # step's share. Every step keeps a positive advantage, the answer line included.
    correct = dca_token_advantages(advantages[0], list(zip(STEP_ENDS, [0.8, 0.9, 1.0], strict=True)), TOKENS, 0.0)
    assert correct == pytest.approx([2.4 * a] * 3 + [0.3 * a] * 3 + [0.3 * a] * 2, abs=1e-5)
    assert min(correct) > 0
    # The wrong rollout: +0.5, −1.0, +0.2. Only step 2 lowered the score: it takes all the blame (3 × −a per token);
    # step 1, which most convinced the verifier, takes none.
    wrong = dca_token_advantages(advantages[1], list(zip(STEP_ENDS, [0.5, -0.5, -0.3], strict=True)), TOKENS, 0.0)
    assert wrong == pytest.approx([0.0] * 3 + [-3 * a] * 3 + [0.0] * 2, abs=1e-5)


def test_signs_follow_the_advantage_and_steps_sum_to_it() -> None:
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(1, 12)
        tokens = ["x" * rng.randint(1, 3) for _ in range(n)]
        length = sum(map(len, tokens))
        ends = sorted(rng.sample(range(1, length + 1), rng.randint(1, min(4, length))))
        advantage = rng.uniform(-3, 3)
        per_token = dca_token_advantages(advantage, [(e, rng.gauss(0, 1)) for e in ends], tokens, rng.gauss(0, 1))
        assert len(per_token) == n
        assert all(value * advantage >= -1e-9 for value in per_token)
        # Per step: K·a_k on each token, so the first token of each step reads back a_k; Σ a_k = A.
        steps = token_step_ends(ends, tokens)
        steps[-1] = n
        firsts = [per_token[start] for start in [0, *steps[:-1]]]
        assert math.fsum(firsts) / len(steps) == pytest.approx(advantage, abs=1e-9)


def test_without_steps_every_token_carries_the_advantage() -> None:
    assert dca_token_advantages(0.7, [], TOKENS, 0.0) == [0.7] * len(TOKENS)
    assert dca_token_advantages(0.7, [(22, 5.0)], TOKENS, 0.0) == [0.7] * len(TOKENS)  # one step: GRPO
    assert dca_token_advantages(0.7, [], [], 0.0) == []


def test_trailing_tokens_join_the_last_step() -> None:
    # The EOS (empty text) and an unterminated last line come after the last scored step end.
    tokens = [*TOKENS, ""]
    values = dca_token_advantages(1.0, [(7, 1.0), (15, 1.0)], tokens, 0.0)  # all gain in step 1
    assert values == pytest.approx([2.0] * 3 + [0.0] * 6)
