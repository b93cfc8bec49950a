"""Who writes the next segment of a tandem rollout, up to which boundary, and for at most how many tokens.

A rollout loop alternates two questions per rollout::

    plan = drawer.next_segment(authorship.trailing_run)   # author, boundary, max_tokens
    ... the author writes up to plan.stop_rule() (capped by the rollout's remaining budget) ...

Segments end at the same boundaries the weak-model service cuts at (:mod:`services.decoding.boundaries`), so both
authors stop on identical rules. The strategies follow Tandem-RLVR's sampler (CSSLab, ``tandem_sampler.py``):

- ``word`` (the paper's): the author of each word is drawn, the policy with probability ``p_primary``;
- ``sentence``: the author toggles strictly at each sentence end; ``chunk``: fixed ``chunk_tokens`` chunks,
  alternating; ``alternating``: the author switches at every token; ``bernoulli``: drawn at every token.
  The toggling strategies draw the first author with ``p_primary``.

No segment runs past ``max_gap_tokens`` tokens by one author in a row: the segment's token cap stops it there and
the author is *redrawn* (``gap_rule="redraw"``, the reference's: the same author may win again, with a fresh gap).
Earlier semantics of this project stay available by name: ``gap_rule="switch"`` forces the other author;
``random_sentence`` / ``random_chunk`` draw the author at each sentence end / chunk instead of toggling; ``step``
draws at each line; ``alternating_step`` alternates one line each, starting with the policy (the handoff test).
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass
from typing import Literal, get_args

from services.common.genproto.legibility.v1 import learner_pb2
from services.decoding.boundaries import Boundary, StopRule

Strategy = Literal[
    "word",
    "sentence",
    "step",
    "chunk",
    "bernoulli",
    "alternating",
    "random_sentence",
    "random_chunk",
    "alternating_step",
]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
GapRule = Literal["redraw", "switch"]
GAP_RULES: tuple[str, ...] = get_args(GapRule)

# Where a segment of each strategy stops; the chunk and per-token strategies stop on token counts alone.
_BOUNDARY_OF: dict[str, Boundary] = {
    "word": Boundary.WORD,
    "sentence": Boundary.SENTENCE,
    "step": Boundary.STEP,
    "chunk": Boundary.NONE,
    "bernoulli": Boundary.NONE,
    "alternating": Boundary.NONE,
    "random_sentence": Boundary.SENTENCE,
    "random_chunk": Boundary.NONE,
    "alternating_step": Boundary.STEP,
}
_GAP_RULES: dict[int, GapRule] = {
    learner_pb2.GAP_RULE_UNSPECIFIED: "redraw",
    learner_pb2.GAP_RULE_REDRAW: "redraw",
    learner_pb2.GAP_RULE_SWITCH: "switch",
}
_TOGGLES = frozenset({"sentence", "chunk", "alternating", "alternating_step"})
"""Strategies whose author switches at every segment end (not at the gap) instead of being drawn."""
_ONE_TOKEN = frozenset({"bernoulli", "alternating"})
_CHUNKED = frozenset({"chunk", "random_chunk"})


class Author(enum.Enum):
    POLICY = "policy"
    """The strong model being trained (the senior)."""
    WEAK = "weak"
    """The frozen weak model (the junior)."""

    @property
    def other(self) -> Author:
        return Author.WEAK if self is Author.POLICY else Author.POLICY


@dataclass(frozen=True)
class HandoffSchedule:
    """When control passes between the policy and the weak model; names and defaults as in learner.proto."""

    strategy: Strategy = "word"
    """Where control passes, and whether it is drawn or toggles there (see the module)."""
    p_primary: float = 0.5
    """Chance that the policy writes the next segment when it is drawn (the first one of a toggling strategy)."""
    max_gap_tokens: int = 32
    """Most tokens one author writes in one go; then the author is redrawn (or switched, by ``gap_rule``)."""
    chunk_tokens: int = 8
    """Segment length for ``chunk`` and ``random_chunk``."""
    gap_rule: GapRule = "redraw"
    """At ``max_gap_tokens``: ``redraw`` the author (the reference's), or ``switch`` to the other one."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {self.strategy!r}")
        if not (math.isfinite(self.p_primary) and 0.0 <= self.p_primary <= 1.0):
            raise ValueError(f"p_primary must be in [0, 1]; got {self.p_primary}")
        if self.max_gap_tokens < 1:
            raise ValueError(f"max_gap_tokens must be >= 1; got {self.max_gap_tokens}")
        if self.chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be >= 1; got {self.chunk_tokens}")
        if self.gap_rule not in GAP_RULES:
            raise ValueError(f"gap_rule must be one of {', '.join(GAP_RULES)}; got {self.gap_rule!r}")

    @classmethod
    def from_proto(cls, msg: learner_pb2.HandoffSchedule) -> HandoffSchedule:
        """Unset optional fields take the defaults; HANDOFF_STRATEGY_UNSPECIFIED means word."""
        if msg.strategy == learner_pb2.HANDOFF_STRATEGY_UNSPECIFIED:
            strategy = "word"
        else:
            strategy = learner_pb2.HandoffStrategy.Name(msg.strategy).removeprefix("HANDOFF_STRATEGY_").lower()
        if msg.gap_rule not in _GAP_RULES:
            raise ValueError(f"gap_rule: unknown value {msg.gap_rule}")
        defaults = cls()
        return cls(
            strategy=strategy,  # type: ignore[arg-type]  # validated in __post_init__
            p_primary=msg.p_primary if msg.HasField("p_primary") else defaults.p_primary,
            max_gap_tokens=msg.max_gap_tokens if msg.HasField("max_gap_tokens") else defaults.max_gap_tokens,
            chunk_tokens=msg.chunk_tokens if msg.HasField("chunk_tokens") else defaults.chunk_tokens,
            gap_rule=_GAP_RULES[msg.gap_rule],
        )


SOLO = HandoffSchedule(strategy="random_chunk", p_primary=1.0, max_gap_tokens=1 << 30, chunk_tokens=1 << 30)
"""The policy writes everything, in one segment to EOS or the budget."""


@dataclass(frozen=True)
class SegmentLimit:
    """Where the next segment stops: at ``boundary`` or after ``max_tokens`` tokens, whichever comes first."""

    boundary: Boundary
    max_tokens: int

    def stop_rule(self, stop: tuple[str, ...] = ()) -> StopRule:
        """The weak-model service's stop rule for this segment; cap ``max_tokens`` by the rollout budget first."""
        return StopRule(max_new_tokens=self.max_tokens, boundary=self.boundary, stop=stop)


@dataclass(frozen=True)
class SegmentPlan:
    """Answer to "who writes next, up to which boundary, at most how many tokens"."""

    author: Author
    limit: SegmentLimit


class HandoffDrawer:
    """Draws the author of each segment of one rollout; same seed, same sequence of authors."""

    def __init__(self, schedule: HandoffSchedule, seed: int) -> None:
        self.schedule = schedule
        self._rng = random.Random(seed)
        self._current: Author | None = None
        self._run = 0  # tokens the current author has written since its gap allowance started
        self._gap_base = 0  # its trailing run when that allowance started (a redraw at the gap it won again)

    @property
    def current(self) -> Author | None:
        """The author of the segment drawn last; None before the first draw."""
        return self._current

    def next_author(self, tokens_by_current_author: int) -> Author:
        """The author of the next segment.

        ``tokens_by_current_author``: consecutive tokens the current author has written so far (0 at the start).
        Once it has written ``max_gap_tokens`` since its allowance started, the author is redrawn (or switched).
        """
        if tokens_by_current_author < 0:
            raise ValueError(f"tokens_by_current_author must be >= 0; got {tokens_by_current_author}")
        schedule, current = self.schedule, self._current
        run = tokens_by_current_author - self._gap_base
        at_gap = current is not None and run >= schedule.max_gap_tokens
        if at_gap:
            author = current.other if schedule.gap_rule == "switch" else self._draw()  # type: ignore[union-attr]
        elif current is not None and schedule.strategy in _TOGGLES:
            author = current.other
        elif current is None and schedule.strategy == "alternating_step":
            author = Author.POLICY
        else:
            author = self._draw()
        if author is not current:
            self._run, self._gap_base = 0, 0
        elif at_gap:
            self._run, self._gap_base = 0, tokens_by_current_author
        else:
            self._run = run
        self._current = author
        return author

    def _draw(self) -> Author:
        return Author.POLICY if self._rng.random() < self.schedule.p_primary else Author.WEAK

    def segment_limit(self) -> SegmentLimit:
        """Where the segment of the author drawn last stops; never past ``max_gap_tokens`` in one go."""
        if self._current is None:
            raise RuntimeError("segment_limit() needs a next_author() draw first")
        schedule = self.schedule
        room = schedule.max_gap_tokens - self._run  # >= 1: at the gap the allowance restarts
        if schedule.strategy in _CHUNKED:
            room = min(room, schedule.chunk_tokens)
        elif schedule.strategy in _ONE_TOKEN:
            room = 1
        return SegmentLimit(boundary=_BOUNDARY_OF[schedule.strategy], max_tokens=room)

    def next_segment(self, tokens_by_current_author: int) -> SegmentPlan:
        """:meth:`next_author` and :meth:`segment_limit` in one call."""
        author = self.next_author(tokens_by_current_author)
        return SegmentPlan(author=author, limit=self.segment_limit())
