"""The runs a learner knows: start, stop, watch, and recover them from ``runs_dir`` after a restart.

Each run directory holds ``run.json`` (the RunConfig, lifecycle state and timestamps, written by this module) and
``metrics.jsonl`` (one event per line, written by :class:`Run` and, for state changes, by this module). The event
stream of a run is that file: an event's sequence number is its line number, so history replays after a restart.
Everything runs on one event loop thread, so appends from coroutines never interleave within a line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from services.common.errors import InvalidArgument, NotFound, Overloaded
from services.common.genproto.legibility.v1 import learner_pb2
from services.learner.runs.events import EVENTS_FILE, RunEvent, append_event, drop_torn_tail, read_events
from services.learner.runs.run import Run
from services.learner.runs.config import resolve
from services.learner.settings import LearnerSettings
from services.learner.clients.verifier import VerifierClient
from services.learner.clients.vocabulary import check_same_vocabulary, policy_vocabulary, weak_model_info
from services.learner.clients.weak_model import WeakModelClient

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
_KINDS = {
    "state": learner_pb2.RUN_EVENT_KIND_STATE,
    "train": learner_pb2.RUN_EVENT_KIND_TRAIN_STEP,
    "eval": learner_pb2.RUN_EVENT_KIND_EVALUATION,
    "round": learner_pb2.RUN_EVENT_KIND_ROUND,
    "log": learner_pb2.RUN_EVENT_KIND_LOG,
}
_STATES = {
    name: learner_pb2.RunState.Value(f"RUN_STATE_{name.upper()}")
    for name in ("pending", "running", "succeeded", "failed", "stopped")
}
_STATE_NAMES = {value: name for name, value in _STATES.items()}
TERMINAL = {learner_pb2.RUN_STATE_SUCCEEDED, learner_pb2.RUN_STATE_FAILED, learner_pb2.RUN_STATE_STOPPED}


def new_run_id() -> str:
    """``run-20261123t155200-ab12cd``: sortable by creation, valid as an artifact name (``<run_id>-samples``)."""
    return f"run-{datetime.now(UTC):%Y%m%dt%H%M%S}-{secrets.token_hex(3)}"


def _timestamp(seconds: float | None) -> Timestamp | None:
    """A Timestamp from epoch seconds; None (the field stays unset) for a moment that has not come."""
    if seconds is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


class RunRecord:
    """One run: its durable status (``run.json``), its event history (``metrics.jsonl``) and, while live, its task."""

    def __init__(self, run_id: str, run_dir: Path, config: learner_pb2.RunConfig, created_at: float) -> None:
        self.run_id = run_id
        self.dir = run_dir
        self.config = config
        self.state: learner_pb2.RunState.ValueType = learner_pb2.RUN_STATE_PENDING
        self.created_at = created_at
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.error = ""
        self.step = 0
        self.round = 0
        self.metrics: dict[str, float] = {}
        self.events: list[learner_pb2.RunEvent] = []
        self.run: Run | None = None
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
            "state": _STATE_NAMES[self.state],
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "config": json_format.MessageToDict(self.config, preserving_proto_field_name=True),
        }
        self.dir.mkdir(parents=True, exist_ok=True)
        temporary = self.dir / f"{RUN_FILE}.new"
        temporary.write_text(json.dumps(document, indent=2))
        os.replace(temporary, self.dir / RUN_FILE)

    @classmethod
    def load(cls, run_dir: Path) -> RunRecord:
        """A record from run.json, its history replayed from metrics.jsonl (a torn last line is dropped)."""
        document = json.loads((run_dir / RUN_FILE).read_text())
        config = json_format.ParseDict(document["config"], learner_pb2.RunConfig())
        record = cls(document["run_id"], run_dir, config, document["created_at"])
        record.state = _STATES[document["state"]]
        record.started_at = document.get("started_at")
        record.finished_at = document.get("finished_at")
        record.error = document.get("error", "")
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
        proto = learner_pb2.RunEvent(
            run_id=self.run_id,
            sequence=len(self.events) + 1,
            kind=_KINDS.get(event.kind, learner_pb2.RUN_EVENT_KIND_UNSPECIFIED),
            time=_timestamp(event.time),
            step=event.step,
            round=event.round,
            metrics=event.metrics,
            message=event.message,
        )
        if event.kind == "state":
            proto.state = _STATES.get(event.message.split(":", 1)[0], learner_pb2.RUN_STATE_UNSPECIFIED)
        self.events.append(proto)
        self._notify()

    def on_run_event(self, event: RunEvent) -> None:
        """:class:`Run`'s callback: it has already appended the event to metrics.jsonl."""
        self._add(event)

    def set_state(self, state: learner_pb2.RunState.ValueType, error: str = "") -> None:
        """Change state: run.json first, then a STATE event (message ``running``, ``failed: <error>``, ...)."""
        now = time.time()
        self.state, self.error = state, error
        if state == learner_pb2.RUN_STATE_RUNNING and self.started_at is None:
            self.started_at = now
        if state in TERMINAL:
            self.finished_at = now
        self.save()
        message = _STATE_NAMES[state] + (f": {error}" if error else "")
        self.append(RunEvent("state", self.step, self.round, {}, message, now))

    def detach(self) -> None:
        self.detached = True
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def watch(self, after_sequence: int) -> AsyncIterator[learner_pb2.RunEvent]:
        """Events after ``after_sequence``, then live ones until the run ends (or the learner stops it)."""
        sent = after_sequence
        while True:
            changed = self._changed
            while sent < len(self.events):
                yield self.events[sent]
                sent += 1
            if self.state in TERMINAL or self.detached:
                return
            await changed.wait()

    @property
    def active(self) -> bool:
        return self.state not in TERMINAL and (self.task is None or not self.task.done())

    def message(self) -> learner_pb2.Run:
        return learner_pb2.Run(
            run_id=self.run_id,
            config=self.config,
            state=self.state,
            created_at=_timestamp(self.created_at),
            started_at=_timestamp(self.started_at),
            finished_at=_timestamp(self.finished_at),
            step=self.step,
            round=self.round,
            metrics=self.metrics,
            error=self.error,
            report_uri=str(self.dir.resolve()),
        )


def describe(error: BaseException) -> str:
    """The run's error text: a failed service call names its status, not grpc's multi-line debug string."""
    if isinstance(error, aio.AioRpcError):
        return f"a weak-model or verifier call failed: {error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"


class RunRegistry:
    """Runs as asyncio tasks, at most ``max_concurrent_runs`` at once; unfinished runs resume at start-up."""

    def __init__(self, settings: LearnerSettings, weak: WeakModelClient, verifier: VerifierClient | None) -> None:
        self.settings = settings
        self._weak = weak
        self._verifier = verifier
        self._runs: dict[str, RunRecord] = {}
        self._waiting: list[RunRecord] = []
        """Recovered unfinished runs waiting for a free slot, oldest first."""
        self._closing = False

    def recover(self) -> None:
        """Load every ``runs_dir/*/run.json``; unfinished runs (PENDING/RUNNING) resume from their checkpoints."""
        for path in sorted(self.settings.runs_dir.glob(f"*/{RUN_FILE}")):
            try:
                record = RunRecord.load(path.parent)
            except (OSError, ValueError, KeyError, json_format.ParseError) as error:
                log.warning("skipping unreadable run %s: %s", path.parent, error)
                continue
            self._runs[record.run_id] = record
        unfinished = sorted((r for r in self._runs.values() if r.state not in TERMINAL), key=lambda r: r.created_at)
        if unfinished:
            log.info("resuming %d unfinished run(s): %s", len(unfinished), ", ".join(r.run_id for r in unfinished))
        self._waiting.extend(unfinished)
        self._schedule()

    def _active(self) -> int:
        return sum(1 for r in self._runs.values() if r.task is not None and not r.task.done())

    def _schedule(self) -> None:
        while self._waiting and not self._closing and self._active() < self.settings.max_concurrent_runs:
            self._launch(self._waiting.pop(0))

    def _launch(self, record: RunRecord) -> None:
        record.task = asyncio.create_task(self._execute(record), name=f"run {record.run_id}")
        record.task.add_done_callback(lambda _: self._schedule())

    async def start(self, config: learner_pb2.RunConfig) -> RunRecord:
        """Validate the config, refuse past max_concurrent_runs, then start the run (returned PENDING).

        A policy whose tokenizer differs from the weak model's is refused here when the weak-model service answers,
        and fails the run at its start otherwise.
        """
        options = resolve(config, self.settings.policy_model_path)
        weak_info = await weak_model_info(self._weak, timeout_s=5.0)
        if weak_info is not None:
            policy_sha256 = await asyncio.to_thread(policy_vocabulary, options.policy_model)
            check_same_vocabulary(options.policy_model, policy_sha256, weak_info, "config.policy_model")
        limit = self.settings.max_concurrent_runs
        if self._closing or self._active() + len(self._waiting) >= limit:
            raise Overloaded(f"{limit} run(s) already active (max_concurrent_runs); stop one or retry later")
        run_id = new_run_id()
        while run_id in self._runs or (self.settings.runs_dir / run_id).exists():
            run_id = new_run_id()
        record = RunRecord(run_id, self.settings.runs_dir / run_id, config, time.time())
        record.save()
        self._runs[run_id] = record
        self._launch(record)
        log.info("run %s started: %s", run_id, json_format.MessageToDict(config, preserving_proto_field_name=True))
        return record

    async def _execute(self, record: RunRecord) -> None:
        if record.stopped_by_user:  # StopRun before the task got to run
            record.set_state(learner_pb2.RUN_STATE_STOPPED)
            return
        try:
            options = resolve(record.config, self.settings.policy_model_path)
            record.run = Run(record.run_id, options, self.settings, self._weak, self._verifier, record.on_run_event)
            record.set_state(learner_pb2.RUN_STATE_RUNNING)
            await record.run.execute()
        except asyncio.CancelledError:
            log.warning(
                "run %s interrupted; it resumes from its last checkpoint when the learner restarts", record.run_id
            )
            raise
        except Exception as error:
            log.exception("run %s failed", record.run_id)
            record.set_state(learner_pb2.RUN_STATE_FAILED, describe(error))
            return
        if record.run.state.finished:
            record.set_state(learner_pb2.RUN_STATE_SUCCEEDED)
        elif record.stopped_by_user:
            record.set_state(learner_pb2.RUN_STATE_STOPPED)
        else:
            log.info("run %s paused at step %d by shutdown; it resumes on restart", record.run_id, record.step)

    def get(self, run_id: str) -> RunRecord:
        if not run_id:
            raise InvalidArgument("run_id", "required")
        record = self._runs.get(run_id)
        if record is None:
            raise NotFound(f"run_id: no run {run_id!r}")
        return record

    def stop(self, run_id: str) -> RunRecord:
        """Ask the run to stop after its current step (checkpointed); a waiting run stops at once."""
        record = self.get(run_id)
        if record.state in TERMINAL:
            return record
        record.stopped_by_user = True
        if record in self._waiting:
            self._waiting.remove(record)
            record.set_state(learner_pb2.RUN_STATE_STOPPED)
        elif record.run is not None:
            record.run.stop_requested = True
        return record

    def list(self) -> list[RunRecord]:
        """Newest first."""
        return sorted(self._runs.values(), key=lambda r: r.created_at, reverse=True)

    async def watch(self, run_id: str, after_sequence: int) -> AsyncIterator[learner_pb2.RunEvent]:
        if after_sequence < 0:
            raise InvalidArgument("after_sequence", f"must be >= 0, got {after_sequence}")
        async for event in self.get(run_id).watch(after_sequence):
            yield event

    async def close(self, wait_s: float) -> None:
        """Ask live runs to stop after their step (they stay RUNNING, to resume), wait up to wait_s, then cancel."""
        self._closing = True
        self._waiting.clear()
        tasks = [r.task for r in self._runs.values() if r.task is not None and not r.task.done()]
        for record in self._runs.values():
            if record.run is not None:
                record.run.stop_requested = True
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=wait_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        for record in self._runs.values():
            record.detach()
