"""Deliberative credit assignment at the token level: a rollout's GRPO advantage spread over its steps' tokens.

Without DCA every trained token of a rollout carries its group-relative advantage A = (R − group mean) /
(group std + eps). With DCA, A is split over the solution's steps by the verifier's step-score changes
(:mod:`services.learner.rl.dca`) and each token of step k carries K·a_k. The split keeps A's sign on every step and
sums to A exactly; with equal shares (or one step) every token carries A, exactly GRPO.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

from services.learner.rl.dca import step_shares, token_advantages_of_steps


def token_step_ends(char_ends: Sequence[int], token_texts: Sequence[str]) -> list[int]:
    """Step ends as token positions (exclusive): the first token whose text reaches each character offset."""
    token_char_ends = list(itertools.accumulate(len(t) for t in token_texts))
    ends: list[int] = []
    for char_end in char_ends:
        position = min(bisect.bisect_left(token_char_ends, char_end) + 1, len(token_texts))
        if not ends or position > ends[-1]:
            ends.append(position)
    return ends


def dca_token_advantages(
    advantage: float, step_scores: Sequence[tuple[int, float]], token_texts: Sequence[str], initial_score: float
) -> list[float]:
    """``advantage`` spread over a response's tokens by its steps' score changes (every token A if no steps).

    ``step_scores``: (character end of the step in the response text, verifier score of the text cut there).
    ``token_texts``: each trained token's text; tokens after the last scored step (a final line without a newline,
    the EOS) belong to the last step.
    """
    n = len(token_texts)
    if n == 0:
        return []
    if not step_scores:
        return [advantage] * n
    # Steps that end in the same token merge: the score after the last of them counts.
    by_token_end: dict[int, float] = {}
    for char_end, score in step_scores:
        by_token_end[token_step_ends([char_end], token_texts)[0]] = score
    ends = sorted(by_token_end)
    shares = step_shares(advantage, [by_token_end[e] for e in ends], initial_score)
    ends[-1] = n
    return token_advantages_of_steps(shares, ends, n)
