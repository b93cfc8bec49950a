"""The runs a learner knows: start, stop, watch, and recover them from ``runs_dir`` after a restart.

Each run directory holds ``run.json`` and ``metrics.jsonl`` (see :mod:`services.learner.runs.records`). When a run
ends (succeeded, failed or stopped) the learner writes its report and stores it as an artifact, so any client
fetches it with ``legibility runs report`` instead of reading the learner's disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from grpc import aio

from services.common.artifacts import ArtifactStore
from services.common.errors import InvalidArgument, NotFound, Overloaded
from services.learner.clients.verifier import VerifierClient
from services.learner.clients.vocabulary import check_same_vocabulary, policy_vocabulary, weak_model_info
from services.learner.clients.weak_model import WeakModelClient
from services.learner.runs.config import resolve_document
from services.learner.runs.events import RunEvent
from services.learner.runs.products import store_report
from services.learner.runs.records import RUN_FILE, RunRecord, RunStatus
from services.learner.runs.run import Run
from services.learner.settings import LearnerSettings

log = logging.getLogger(__name__)

REPORT_ARTIFACT = "{run_id}-report"


def new_run_id() -> str:
    """``run-20261123t155200-ab12cd``: sortable by creation, valid as an artifact name (``<run_id>-samples``)."""
    return f"run-{datetime.now(UTC):%Y%m%dt%H%M%S}-{secrets.token_hex(3)}"


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
        self._store = ArtifactStore(settings.artifact_root)

    def recover(self) -> None:
        """Load every ``runs_dir/*/run.json``; unfinished runs (PENDING/RUNNING) resume from their checkpoints."""
        for path in sorted(self.settings.runs_dir.glob(f"*/{RUN_FILE}")):
            try:
                record = RunRecord.load(path.parent)
            except (OSError, ValueError, KeyError) as error:
                log.warning("skipping unreadable run %s: %s", path.parent, error)
                continue
            self._runs[record.run_id] = record
        unfinished = sorted((r for r in self._runs.values() if not r.status.terminal), key=lambda r: r.created_at)
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

    async def start(self, config: dict[str, Any]) -> RunRecord:
        """Validate the config, refuse past max_concurrent_runs, then start the run (returned PENDING).

        A policy whose tokenizer differs from the weak model's is refused here when the weak-model service answers,
        and fails the run at its start otherwise.
        """
        options = resolve_document(config, self.settings.policy_model_path)
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
        log.info("run %s started: %s", run_id, json.dumps(config))
        return record

    async def _execute(self, record: RunRecord) -> None:
        if record.stopped_by_user:  # StopRun before the task got to run
            await self._end(record, RunStatus.STOPPED)
            return
        try:
            options = resolve_document(record.config, self.settings.policy_model_path)
            record.run = Run(record.run_id, options, self.settings, self._weak, self._verifier, record.on_run_event)
            record.set_status(RunStatus.RUNNING)
            await record.run.execute()
        except asyncio.CancelledError:
            log.warning(
                "run %s interrupted; it resumes from its last checkpoint when the learner restarts", record.run_id
            )
            raise
        except Exception as error:
            log.exception("run %s failed", record.run_id)
            await self._end(record, RunStatus.FAILED, describe(error))
            return
        if record.run.state.finished:
            await self._end(record, RunStatus.SUCCEEDED)
        elif record.stopped_by_user:
            await self._end(record, RunStatus.STOPPED)
        else:
            log.info("run %s paused at step %d by shutdown; it resumes on restart", record.run_id, record.step)

    async def _end(self, record: RunRecord, status: RunStatus, error: str = "") -> None:
        """Store the run's report (partial when it failed or stopped), then announce the end: a client that sees
        the terminal state finds ``report_uri`` set."""
        try:
            record.report_uri = await asyncio.to_thread(
                store_report, self._store, record, status, REPORT_ARTIFACT.format(run_id=record.run_id)
            )
        except Exception:  # a report that cannot be written must not hide how the run ended
            log.exception("run %s: its report could not be stored", record.run_id)
        record.set_status(status, error)

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
        if record.status.terminal:
            return record
        record.stopped_by_user = True
        if record in self._waiting:
            self._waiting.remove(record)
            record.set_status(RunStatus.STOPPED)
        elif record.run is not None:
            record.run.stop_requested = True
        return record

    def list(self) -> list[RunRecord]:
        """Newest first."""
        return sorted(self._runs.values(), key=lambda r: r.created_at, reverse=True)

    async def watch(self, run_id: str, after_sequence: int) -> AsyncIterator[tuple[int, RunEvent]]:
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
