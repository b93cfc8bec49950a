"""Deliberative credit assignment: spread the outcome reward over a solution's steps by verifier score gains.

The outcome reward stays the whole prize (Dietz 2025): steps only share it, so per-step rewards always sum to the
outcome reward exactly, and a solution cannot earn more by adding steps.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence


def step_rewards(outcome_reward: float, step_scores: Sequence[float], initial_score: float) -> list[float]:
    """Shares of ``outcome_reward`` per step, proportional to the positive score gains max(0, s_i − s_{i−1}).

    ``step_scores``: the verifier's score s_1..s_k after each step prefix; ``initial_score``: s_0, the score before
    any step (e.g. of an empty solution). Uniform shares when no step gains. ``sum(result) == outcome_reward`` holds
    exactly with Python's left-to-right ``sum``: the last step takes the remainder.
    """
    k = len(step_scores)
    if k == 0:
        raise ValueError("step_rewards needs at least one step")
    scores = [initial_score, *step_scores]
    if not all(math.isfinite(s) for s in [*scores, outcome_reward]):
        raise ValueError("scores and outcome_reward must be finite")
    gains = [max(0.0, after - before) for before, after in itertools.pairwise(scores)]
    total_gain = sum(gains)
    shares = [g / total_gain for g in gains] if total_gain > 0 else [1.0 / k] * k
    rewards = [outcome_reward * share for share in shares[:-1]]
    rewards.append(_remainder(outcome_reward, sum(rewards)))
    return rewards


def _remainder(total: float, partial: float) -> float:
    """The r with ``partial + r == total`` in floating point; R − partial, nudged by an ulp when rounding misses."""
    r = total - partial
    for _ in range(4):  # rounding can miss by at most an ulp or two
        got = partial + r
        if got == total:
            return r
        r = math.nextafter(r, math.inf if got < total else -math.inf)
    raise ArithmeticError(f"cannot make {partial} + r equal {total} exactly")


def token_rewards(per_step: Sequence[float], step_ends: Sequence[int], num_tokens: int) -> list[float]:
    """Per-token rewards with each step's reward on its last token and 0 elsewhere.

    ``step_ends``: each step's end in token positions of the response, exclusive (the step's last token is at
    ``end − 1``), strictly increasing and at most ``num_tokens``.
    """
    if len(per_step) != len(step_ends):
        raise ValueError(f"{len(per_step)} step rewards but {len(step_ends)} step ends")
    if any(end < 1 or end > num_tokens for end in step_ends):
        raise ValueError(f"step ends must lie in [1, {num_tokens}]")
    if any(b <= a for a, b in itertools.pairwise(step_ends)):
        raise ValueError("step ends must be strictly increasing")
    rewards = [0.0] * num_tokens
    for reward, end in zip(per_step, step_ends, strict=True):
        rewards[end - 1] = reward
    return rewards
