"""A run's event: one line of ``metrics.jsonl``, one WatchRun message. Light on purpose (no torch import)."""

from __future__ import annotations

from dataclasses import dataclass

EventKind = str
"""state | train | eval | round | log"""


@dataclass(frozen=True)
class RunEvent:
    kind: EventKind
    step: int
    round: int
    metrics: dict[str, float]
    message: str = ""
    time: float = 0.0
