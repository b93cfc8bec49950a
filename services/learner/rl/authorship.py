"""Per-token record of who wrote a tandem rollout's response, and the views the trainers need from it."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from services.learner.rl.schedule import Author


def true_spans(flags: Sequence[bool], offset: int = 0) -> list[tuple[int, int]]:
    """Maximal runs of True as ``(start, end)`` pairs, end exclusive, shifted by ``offset``."""
    spans: list[tuple[int, int]] = []
    start: int | None = None
    for i, flag in enumerate([*flags, False]):  # the sentinel closes a trailing run
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            spans.append((offset + start, offset + i))
            start = None
    return spans


def author_weights(by_policy: Sequence[bool], junior_token_weight: float) -> list[float]:
    """Loss weight per token: 1.0 where the policy wrote it, λ = ``junior_token_weight`` where the weak model did."""
    if not (math.isfinite(junior_token_weight) and 0.0 <= junior_token_weight <= 1.0):
        raise ValueError(f"junior_token_weight must be in [0, 1]; got {junior_token_weight}")
    return [1.0 if policy else junior_token_weight for policy in by_policy]


class Authorship:
    """The response of one rollout as appended segments; positions are relative to the response start."""

    def __init__(self) -> None:
        self._token_ids: list[int] = []
        self._authors: list[Author] = []
        self._log_probs: list[float | None] = []  # the policy's sampling log-prob; None for weak tokens

    def append(self, token_ids: Sequence[int], author: Author, log_probs: Sequence[float] | None = None) -> None:
        """Add a segment written by ``author``.

        ``log_probs``: the policy's log-prob of each token, required for policy segments (the old log-probs of the
        PPO ratio) and refused for weak ones (the weak model's own log-probs are not the policy's). An empty
        segment (e.g. the weak model stopped at EOS at once) changes nothing.
        """
        if author is Author.POLICY:
            if log_probs is None or len(log_probs) != len(token_ids):
                raise ValueError("a policy segment needs one log-prob per token")
            if not all(math.isfinite(lp) for lp in log_probs):
                raise ValueError("policy log-probs must be finite")
        elif log_probs is not None:
            raise ValueError("weak segments carry no policy log-probs")
        self._token_ids.extend(token_ids)
        self._authors.extend([author] * len(token_ids))
        self._log_probs.extend(log_probs if log_probs is not None else [None] * len(token_ids))

    def __len__(self) -> int:
        return len(self._token_ids)

    @property
    def token_ids(self) -> list[int]:
        return list(self._token_ids)

    @property
    def authors(self) -> list[Author]:
        return list(self._authors)

    @property
    def last_author(self) -> Author | None:
        return self._authors[-1] if self._authors else None

    @property
    def trailing_run(self) -> int:
        """Consecutive tokens the last author has written at the end: what :class:`HandoffDrawer` asks for."""
        run = 0
        for author in reversed(self._authors):
            if author is not self._authors[-1]:
                break
            run += 1
        return run

    def loss_weights(self, junior_token_weight: float) -> list[float]:
        """Loss weight per token: 1.0 for the policy's, λ = ``junior_token_weight`` for the weak model's."""
        return author_weights([a is Author.POLICY for a in self._authors], junior_token_weight)

    @property
    def senior_token_frac(self) -> float:
        """Share of the response written by the policy; 0.0 for an empty response."""
        if not self._authors:
            return 0.0
        return sum(a is Author.POLICY for a in self._authors) / len(self._authors)

    @property
    def num_handoffs(self) -> int:
        """Times control changed hands between adjacent tokens."""
        return sum(a is not b for a, b in itertools.pairwise(self._authors))

    @property
    def action_ranges(self) -> list[tuple[int, int]]:
        """Maximal spans ``(start, end)`` of policy tokens, end exclusive: OpenRLHF AgentExecutor's action_ranges."""
        return true_spans([a is Author.POLICY for a in self._authors])

    def rollout_log_probs(self, fill: float = 0.0) -> list[float]:
        """The policy's sampling log-prob per token, ``fill`` where the weak model wrote (outside action_ranges)."""
        return [fill if lp is None else lp for lp in self._log_probs]
