"""A run's event: one line of ``metrics.jsonl``, one WatchRun message. Light on purpose (no torch import).

The run (train, eval, round, log events) and the run registry (state events) both append here, and the registry
and the report both read it back, so the file has one writer format and one reader.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

EVENTS_FILE = "metrics.jsonl"

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


def append_event(path: Path, event: RunEvent) -> None:
    """Append one event as one JSON line."""
    with path.open("a") as fh:
        fh.write(json.dumps(asdict(event)) + "\n")


def drop_torn_tail(path: Path) -> None:
    """Cut a last line without its newline (a kill mid-write), so later appends start on a line of their own."""
    if not path.is_file():
        return
    text = path.read_text()
    if text and not text.endswith("\n"):
        path.write_text(text[: text.rfind("\n") + 1])


def read_events(path: Path) -> list[RunEvent]:
    """The events of a metrics.jsonl, skipping lines that do not parse (a truncated last line); [] if missing."""
    events: list[RunEvent] = []
    if not path.is_file():
        return events
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            events.append(
                RunEvent(
                    str(raw["kind"]),
                    int(raw["step"]),
                    int(raw.get("round", 0)),
                    {k: float(v) for k, v in raw.get("metrics", {}).items() if isinstance(v, int | float)},
                    str(raw.get("message", "")),
                    float(raw.get("time", 0.0)),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("skipping unreadable line %d of %s", number, path)
    return events
