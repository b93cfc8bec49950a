"""Who writes the next segment of a tandem rollout, up to which boundary, and for at most how many tokens.

A rollout loop alternates two questions per rollout::

    plan = drawer.next_segment(authorship.trailing_run)   # author, boundary, max_tokens
    ... the author writes up to plan.stop_rule() (capped by the rollout's remaining budget) ...

Segments end at the same boundaries the weak-model service cuts at (:mod:`services.decoding.boundaries`), so both
authors stop on identical rules. No author ever writes more than ``max_gap_tokens`` tokens in a row: the segment's
token cap stops it there, and the next draw then forces the other author (Tandem-RLVR's forced redraw).
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass
from typing import Literal, get_args

from services.common.genproto.legibility.v1 import learner_pb2
from services.decoding.boundaries import Boundary, StopRule

Strategy = Literal["word", "sentence", "step", "chunk", "bernoulli", "alternating"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)

# Where a segment of each strategy stops; chunk and bernoulli stop on token counts alone.
_BOUNDARY_OF: dict[str, Boundary] = {
    "word": Boundary.WORD,
    "sentence": Boundary.SENTENCE,
    "step": Boundary.STEP,
    "chunk": Boundary.NONE,
    "bernoulli": Boundary.NONE,
    "alternating": Boundary.STEP,  # the proto: "alternate at every step"
}


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
    """Where control may pass: at words, sentences, steps (lines), fixed chunks, every token, or strict alternation."""
    p_primary: float = 0.5
    """Chance that the policy writes the next segment (not used by ``alternating``)."""
    max_gap_tokens: int = 32
    """Most tokens one author writes in a row; the other author is forced after that."""
    chunk_tokens: int = 8
    """Segment length for ``chunk``."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {self.strategy!r}")
        if not (math.isfinite(self.p_primary) and 0.0 <= self.p_primary <= 1.0):
            raise ValueError(f"p_primary must be in [0, 1]; got {self.p_primary}")
        if self.max_gap_tokens < 1:
            raise ValueError(f"max_gap_tokens must be >= 1; got {self.max_gap_tokens}")
        if self.chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be >= 1; got {self.chunk_tokens}")

    @classmethod
    def from_proto(cls, msg: learner_pb2.HandoffSchedule) -> HandoffSchedule:
        """Unset optional fields take the defaults; HANDOFF_STRATEGY_UNSPECIFIED means word."""
        if msg.strategy == learner_pb2.HANDOFF_STRATEGY_UNSPECIFIED:
            strategy = "word"
        else:
            strategy = learner_pb2.HandoffStrategy.Name(msg.strategy).removeprefix("HANDOFF_STRATEGY_").lower()
        defaults = cls()
        return cls(
            strategy=strategy,  # type: ignore[arg-type]  # validated in __post_init__
            p_primary=msg.p_primary if msg.HasField("p_primary") else defaults.p_primary,
            max_gap_tokens=msg.max_gap_tokens if msg.HasField("max_gap_tokens") else defaults.max_gap_tokens,
            chunk_tokens=msg.chunk_tokens if msg.HasField("chunk_tokens") else defaults.chunk_tokens,
        )


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
        self._run = 0  # tokens the current author will have written in a row when its segment starts

    @property
    def current(self) -> Author | None:
        """The author of the segment drawn last; None before the first draw."""
        return self._current

    def next_author(self, tokens_by_current_author: int) -> Author:
        """The author of the next segment.

        ``tokens_by_current_author``: consecutive tokens the current author has written so far (0 at the start);
        at ``max_gap_tokens`` or more the other author is forced.
        """
        if tokens_by_current_author < 0:
            raise ValueError(f"tokens_by_current_author must be >= 0; got {tokens_by_current_author}")
        schedule, current = self.schedule, self._current
        if schedule.strategy == "alternating":
            author = Author.POLICY if current is None else current.other
        elif current is not None and tokens_by_current_author >= schedule.max_gap_tokens:
            author = current.other
        else:
            author = Author.POLICY if self._rng.random() < schedule.p_primary else Author.WEAK
        self._run = tokens_by_current_author if author is current else 0
        self._current = author
        return author

    def segment_limit(self) -> SegmentLimit:
        """Where the segment of the author drawn last stops; never past ``max_gap_tokens`` in a row."""
        if self._current is None:
            raise RuntimeError("segment_limit() needs a next_author() draw first")
        schedule = self.schedule
        room = schedule.max_gap_tokens - self._run  # >= 1: a run at the gap forces a switch, resetting _run
        if schedule.strategy == "chunk":
            room = min(room, schedule.chunk_tokens)
        elif schedule.strategy == "bernoulli":
            room = 1  # a fresh draw at every token
        return SegmentLimit(boundary=_BOUNDARY_OF[schedule.strategy], max_tokens=room)

    def next_segment(self, tokens_by_current_author: int) -> SegmentPlan:
        """:meth:`next_author` and :meth:`segment_limit` in one call."""
        author = self.next_author(tokens_by_current_author)
        return SegmentPlan(author=author, limit=self.segment_limit())
