"""The one interface a tandem rollout needs from each author: write the next segment of many prefixes at once.

The in-process trainer's policy (transformers), the weak-model service client, and the adapters for external
RL stacks (OpenRLHF's ``llm_engine``, TRL's generation) each implement :class:`SegmentWriter`, so there is one
tandem implementation for all of them.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from services.decoding.requests import SegmentRequest


@dataclass(frozen=True)
class Segment:
    """What one author wrote: kept tokens, their log-probs under that author, and whether it ended the text."""

    token_ids: tuple[int, ...]
    log_probs: tuple[float, ...]
    ended: bool
    """The author emitted EOS (not kept): the solution is complete."""
    eos_log_prob: float | None = None
    """The EOS token's log-prob under the author, when the writer reports it (trainers that learn to stop need it)."""
    eos_id: int | None = None
    """Which EOS token ended the text, when the writer reports it (a tokenizer may have several)."""


class SegmentWriter(Protocol):
    """An author of segments (the policy, or the weak model)."""

    async def write(self, requests: Sequence[SegmentRequest]) -> list[Segment]:
        """One segment per request, in order; requests are batched together."""
        ...


class SegmentSession(Protocol):
    """One author's continuous decoding loop over many texts, stepped by the rollout loop.

    Texts join with their first segment; at every step each running text gets one more token; a text whose
    segment ended pauses and is returned, and at the next step it either continues with its next segment (the
    author keeps its state: nothing is recomputed), leaves (its state is kept aside: its text comes back after
    the other author's segment) or is dropped (its text is complete).
    """

    @property
    def running(self) -> int:
        """Texts the next step decodes (not paused)."""
        ...

    async def step(
        self,
        join: Sequence[tuple[Hashable, SegmentRequest]] = (),
        resume: Sequence[tuple[Hashable, SegmentRequest]] = (),
        leave: Sequence[Hashable] = (),
        drop: Sequence[Hashable] = (),
    ) -> list[tuple[Hashable, Segment]]:
        """Apply the decisions, add the new texts, decode one token each; the segments that ended, by key."""
        ...


@runtime_checkable
class ContinuousSegmentWriter(SegmentWriter, Protocol):
    """An author that can also write in a :class:`SegmentSession` (the learner's in-process policy)."""

    def session(self) -> SegmentSession: ...
