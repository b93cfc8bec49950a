"""One run's durable record: its status in ``run.json`` and its event history in ``metrics.jsonl``.

The record is domain data only (a :class:`RunStatus`, :class:`RunEvent` s, the config as the JSON document a
user sent); :mod:`services.learner.wire` turns it into the gRPC messages. An event's sequence number is its line
number in ``metrics.jsonl``, so history replays after a restart. Everything runs on one event loop thread, so
appends from coroutines never interleave within a line.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from enum import StrEnum
from pathlib import Path
from typing import Any

from services.learner.runs.events import EVENTS_FILE, RunEvent, append_event, drop_torn_tail, read_events

RUN_FILE = "run.json"


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.STOPPED)


class RunRecord:
    """One run: its durable status (``run.json``), its event history (``metrics.jsonl``) and, while live, its task."""

    def __init__(self, run_id: str, run_dir: Path, config: dict[str, Any], created_at: float) -> None:
        self.run_id = run_id
        self.dir = run_dir
        self.config = config
        """The RunConfig as its JSON document (proto field names)."""
        self.status = RunStatus.PENDING
        self.created_at = created_at
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.error = ""
        self.report_uri = ""
        """``artifact://<run_id>-report/v…``: the latest report the learner stored (a partial one if the run failed
        or was stopped); empty until the run ends."""
        self.step = 0
        self.round = 0
        self.metrics: dict[str, float] = {}
        self.events: list[RunEvent] = []
        """The history; event i has sequence i + 1."""
        self.run: Any = None
        """The live :class:`~services.learner.runs.run.Run`, while it executes."""
        self.task: asyncio.Task[None] | None = None
        self.stopped_by_user = False
        self.detached = False
        """The learner shut down while the run was unfinished: watchers end, the next learner resumes it."""
        self._changed = asyncio.Event()

    # ---- persistence -------------------------------------------------------------------------------------------

    def save(self) -> None:
        """Write run.json atomically (a kill leaves the old or the new file, never half of one)."""
        document = {
            "run_id": self.run_id,
            "state": self.status.value,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "report_uri": self.report_uri,
            "config": self.config,
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        temporary = self.dir / f"{RUN_FILE}.new"
        temporary.write_text(json.dumps(document, indent=2))
        os.replace(temporary, self.dir / RUN_FILE)

    @classmethod
    def load(cls, run_dir: Path) -> RunRecord:
        """A record from run.json, its history replayed from metrics.jsonl (a torn last line is dropped)."""
        document = json.loads((run_dir / RUN_FILE).read_text())
        record = cls(document["run_id"], run_dir, document["config"], document["created_at"])
        record.status = RunStatus(document["state"])
        record.started_at = document.get("started_at")
        record.finished_at = document.get("finished_at")
        record.error = document.get("error", "")
        record.report_uri = document.get("report_uri", "")
        drop_torn_tail(run_dir / EVENTS_FILE)
        for event in read_events(run_dir / EVENTS_FILE):
            record._add(event)
        return record

    # ---- events ------------------------------------------------------------------------------------------------

    def append(self, event: RunEvent) -> None:
        """Record a state event in metrics.jsonl (the same writer :class:`Run` uses) and publish it."""
        append_event(self.dir / EVENTS_FILE, event)
        self._add(event)

    def _add(self, event: RunEvent) -> None:
        """Publish one event already in metrics.jsonl; its sequence is its line number."""
        self.step, self.round = event.step, event.round
        self.metrics.update(event.metrics)
        self.events.append(event)
        self._notify()

    def on_run_event(self, event: RunEvent) -> None:
        """:class:`Run`'s callback: it has already appended the event to metrics.jsonl."""
        self._add(event)

    def set_status(self, status: RunStatus, error: str = "") -> None:
        """Change status: run.json first, then a state event (message ``running``, ``failed: <error>``, ...)."""
        now = time.time()
        self.status, self.error = status, error
        if status == RunStatus.RUNNING and self.started_at is None:
            self.started_at = now
        if status.terminal:
            self.finished_at = now
        self.save()
        message = status.value + (f": {error}" if error else "")
        self.append(RunEvent("state", self.step, self.round, {}, message, now))

    def detach(self) -> None:
        self.detached = True
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def watch(self, after_sequence: int) -> AsyncIterator[tuple[int, RunEvent]]:
        """(sequence, event) after ``after_sequence``, then live ones until the run ends (or the learner stops it)."""
        sent = after_sequence
        while True:
            changed = self._changed
            while sent < len(self.events):
                yield sent + 1, self.events[sent]
                sent += 1
            if self.status.terminal or self.detached:
                return
            await changed.wait()

    @property
    def active(self) -> bool:
        return not self.status.terminal and (self.task is None or not self.task.done())


def state_of(event: RunEvent) -> RunStatus | None:
    """The status a state event announces (its message is ``<status>`` or ``<status>: <error>``)."""
    if event.kind != "state":
        return None
    try:
        return RunStatus(event.message.split(":", 1)[0])
    except ValueError:
        return None
