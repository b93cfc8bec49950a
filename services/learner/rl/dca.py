"""Deliberative credit assignment: spread a rollout's advantage over its steps by the verifier's score changes.

The outcome stays the whole prize (Dietz 2025): steps only share it. A rollout's group-relative advantage A is split
into step shares a_1..a_K with Σ a_k = A exactly, each share carrying A's sign:

- A > 0 (better than its group): shares ∝ the rises max(0, s_k − s_{k−1}): the steps that convinced the verifier
  earn the credit, a step that lowered the score earns none (never a negative advantage);
- A < 0 (worse than its group): shares ∝ the drops max(0, s_{k−1} − s_k): the steps that lowered the score take the
  blame, the step that most convinced the verifier takes none (never a positive advantage);
- no rise (or no drop) at all: equal shares.

s_0 is the score before any step (0 for a verifier centred at 0), s_k the score of the solution cut after step k.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence


def step_shares(total: float, step_scores: Sequence[float], initial_score: float) -> list[float]:
    """``total`` split over the steps as the module says; ``sum(result) == total`` exactly (Python's ``sum``).

    ``step_scores``: the verifier's score s_1..s_k after each step prefix; ``initial_score``: s_0.
    """
    k = len(step_scores)
    if k == 0:
        raise ValueError("step_shares needs at least one step")
    scores = [initial_score, *step_scores]
    if not all(math.isfinite(s) for s in [*scores, total]):
        raise ValueError("scores and total must be finite")
    toward_total = 1.0 if total >= 0 else -1.0  # rises earn credit, drops take blame
    weights = [max(0.0, toward_total * (after - before)) for before, after in itertools.pairwise(scores)]
    weight_sum = sum(weights)
    fractions = [w / weight_sum for w in weights] if weight_sum > 0 else [1.0 / k] * k
    return _summing_to(total, [total * f for f in fractions[:-1]])


def _summing_to(total: float, shares: list[float]) -> list[float]:
    """``shares`` plus a last share r with ``sum(shares) + r == total`` in floating point.

    r = total − partial rounds, and with round-half-to-even some totals are unreachable from a given partial sum;
    then the largest share moves by one ulp (away from 0, so no sign changes) and the remainder is tried again.
    """
    for _ in range(16):
        partial = sum(shares)
        r = total - partial
        for _ in range(4):  # rounding can miss by at most an ulp or two
            got = partial + r
            if got == total:
                return [*shares, r]
            r = math.nextafter(r, math.inf if got < total else -math.inf)
        largest = max(range(len(shares)), key=lambda i: abs(shares[i]))
        shares[largest] = math.nextafter(shares[largest], math.copysign(math.inf, shares[largest]))
    raise ArithmeticError(f"cannot split {total} into shares that sum to it exactly")


def token_advantages_of_steps(shares: Sequence[float], step_ends: Sequence[int], num_tokens: int) -> list[float]:
    """Each token of step k carries K·a_k: with equal shares every token gets A, exactly GRPO's advantage.

    ``step_ends``: each step's end in token positions of the response, exclusive, strictly increasing; the last
    is ``num_tokens`` (tokens after the last scored step belong to it).
    """
    if len(shares) != len(step_ends):
        raise ValueError(f"{len(shares)} step shares but {len(step_ends)} step ends")
    if not step_ends or step_ends[-1] != num_tokens or step_ends[0] < 1:
        raise ValueError(f"step ends must start at >= 1 and end at num_tokens={num_tokens}")
    if any(b <= a for a, b in itertools.pairwise(step_ends)):
        raise ValueError("step ends must be strictly increasing")
    k = len(shares)
    advantages: list[float] = []
    for share, start, end in zip(shares, [0, *step_ends[:-1]], step_ends, strict=True):
        advantages.extend([k * share] * (end - start))
    return advantages
