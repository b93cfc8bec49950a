"""Per-token advantages from per-token rewards (deliberative credit assignment) with GRPO's group baseline.

Without DCA a rollout's outcome reward R sits on its last token and every token's advantage is
(R − group mean) / group std. With DCA, R is split over the solution's steps by the verifier's step-score gains
(:mod:`services.learner.dca`), and a token's advantage uses the reward still to come from its step on: tokens of
steps that did not move the verifier get less of the credit. The first step's tokens still see all of R, and the
per-token rewards sum to R, so the total prize never changes.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

import torch

from services.learner.dca import step_rewards, token_rewards


def token_step_ends(char_ends: Sequence[int], token_texts: Sequence[str]) -> list[int]:
    """Step ends as token positions (exclusive): the first token whose text reaches each character offset."""
    token_char_ends = list(itertools.accumulate(len(t) for t in token_texts))
    ends: list[int] = []
    for char_end in char_ends:
        position = min(bisect.bisect_left(token_char_ends, char_end) + 1, len(token_texts))
        if not ends or position > ends[-1]:
            ends.append(position)
    return ends


def dca_token_rewards(
    outcome_reward: float, step_scores: Sequence[tuple[int, float]], token_texts: Sequence[str], initial_score: float
) -> list[float]:
    """The outcome reward spread over a response's tokens by step-score gains (all on the last token if no steps)."""
    n = len(token_texts)
    if n == 0:
        return []
    if not step_scores:
        return [0.0] * (n - 1) + [outcome_reward]
    # Steps that end in the same token merge: the score after the last of them counts.
    by_token_end: dict[int, float] = {}
    for char_end, score in step_scores:
        by_token_end[token_step_ends([char_end], token_texts)[0]] = score
    ends = sorted(by_token_end)
    per_step = step_rewards(outcome_reward, [by_token_end[e] for e in ends], initial_score)
    if ends[-1] != n:  # trailing text after the last step (e.g. no final newline): it belongs to the last step
        ends[-1] = n
    return token_rewards(per_step, ends, n)


def rewards_to_go(per_token: Sequence[float]) -> list[float]:
    """Σ of the rewards from each token to the end."""
    return list(itertools.accumulate(reversed(per_token)))[::-1]


def token_advantages(
    per_token_rewards: Sequence[Sequence[float]], outcome_rewards: Sequence[float], group_size: int, eps: float = 1e-6
) -> list[list[float]]:
    """(reward-to-go − group mean of R) / (group std of R + eps) per token; std as in group_advantages."""
    outcomes = torch.tensor(outcome_rewards, dtype=torch.float64).reshape(-1, group_size)
    means = outcomes.mean(dim=-1)
    stds = outcomes.std(dim=-1) if group_size > 1 else torch.zeros_like(means)
    advantages = []
    for index, rewards in enumerate(per_token_rewards):
        group = index // group_size
        mean, std = float(means[group]), float(stds[group])
        advantages.append([(g - mean) / (std + eps) for g in rewards_to_go(rewards)])
    return advantages
