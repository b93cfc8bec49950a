"""The one request type of every author of text: continue these token ids until this rule ends the segment.

The weak-model service's engines, the learner's in-process policy and the adapters' engine writers all take it,
so a segment means the same thing whoever writes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.decoding.boundaries import StopRule

GREEDY_BELOW = 1e-5
"""A temperature below this is greedy (vLLM's rule), so tiny temperatures cannot overflow."""


@dataclass(frozen=True)
class SegmentRequest:
    """Continue ``prefix_ids`` (prompt + text so far) until ``rule`` ends the segment."""

    prefix_ids: tuple[int, ...]
    rule: StopRule
    temperature: float = 0.0
    """Below :data:`GREEDY_BELOW` = greedy."""
    top_p: float = 1.0
    seed: int | None = None
    """Per-segment sampling seed (None = unseeded): the same seed gives the same tokens within one engine."""

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


@dataclass(frozen=True)
class LogProbsRequest:
    """Score ``text_ids`` after ``context_ids`` (which may be empty)."""

    context_ids: tuple[int, ...]
    text_ids: tuple[int, ...]
