"""The one interface a tandem rollout needs from each author: write the next segment of many prefixes at once.

The in-process trainer's policy (transformers), the weak-model service client, and the adapters for external
RL stacks (OpenRLHF's ``llm_engine``, TRL's generation) each implement :class:`SegmentWriter`, so there is one
tandem implementation for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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
