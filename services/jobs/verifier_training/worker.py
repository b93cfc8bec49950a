"""``legibility worker train-verifier``: train the verifier for each request on the retraining stream.

Each worker reads the stream in one consumer group, so a request goes to one worker at a time; it acknowledges
only once the version is published (or the round has nothing to train on), and renews its claim while training.
Any number of workers can run: a request whose worker died is taken over after ``claim_idle_s``; one whose target
version is published already is acknowledged without training again; one that was delivered ``max_attempts``
times goes to the dead-letter stream with its last error, and the learner fails the run with that error.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from contextlib import suppress
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from services.common.artifacts import ArtifactStore
from services.common.registry import Backoff, VersionRegistry
from services.common.tasks import cancel_and_wait, wait_for_event
from services.jobs.verifier_training.fulfil import already_published, train_for_request
from services.jobs.verifier_training.queue import GROUP, KEEP_S, QueueKeys, as_text
from services.jobs.verifier_training.requests import RetrainFailed, RetrainRequest, RetrainResult
from services.jobs.verifier_training.worker_settings import WorkerSettings

log = logging.getLogger(__name__)

REQUESTS = Counter(
    "legibility_retrain_requests_total",
    "Retraining requests a worker finished, by outcome.",
    ["outcome"],  # published | not_retrained | found_published | retry | dead_letter
)
TRAIN_SECONDS = Histogram(
    "legibility_retrain_seconds", "Wall time of one verifier training.", buckets=(10, 30, 60, 120, 300, 600, 1800)
)
IN_PROGRESS = Gauge("legibility_retrain_in_progress", "Requests this worker is training now.")
OUTCOMES = ("published", "not_retrained", "found_published", "retry", "dead_letter")
for _outcome in OUTCOMES:  # every series exists from the start, so increase() sees a worker's first event
    REQUESTS.labels(_outcome)


class Progress:
    """The training thread's latest step and loss, read by the heartbeat on the event loop."""

    def __init__(self) -> None:
        self.step, self.loss = 0, float("nan")

    def __call__(self, step: int, loss: float) -> None:
        self.step, self.loss = step, loss


class Worker:
    """One consumer of the retraining stream."""

    def __init__(self, settings: WorkerSettings, client: Redis) -> None:
        self.settings = settings
        self.client = client
        self.keys = QueueKeys(settings.retrain_stream)
        self.store = ArtifactStore(settings.artifact_root)
        self.registry = VersionRegistry(client)
        self.stopping = asyncio.Event()

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) once; from id 0, so requests queued before any worker
        started are read too."""
        with suppress(ResponseError):  # BUSYGROUP: it exists
            await self.client.xgroup_create(self.keys.stream, GROUP, id="0", mkstream=True)

    async def run(self) -> None:
        """Serve requests until :attr:`stopping` is set (a request in training is finished first)."""
        await self.ensure_group()
        log.info("worker %s reads %s (group %s)", self.settings.consumer, self.keys.stream, GROUP)
        backoff = Backoff(base_s=0.5, cap_s=10.0)
        while not self.stopping.is_set():
            try:
                entry = await self._next()
                if entry is not None:
                    await self.handle(*entry)
                backoff.reset()
            except RedisError as error:  # Redis restarting: the entry stays pending, nothing is lost
                delay = backoff.next_delay()
                log.warning("Redis unavailable (%s); retrying in %.1f s", error, delay)
                await wait_for_event(self.stopping, delay)

    async def _next(self) -> tuple[str, dict[str, str]] | None:
        """A request whose worker went silent for ``claim_idle_s``, else a new one (waiting up to ``block_s``)."""
        idle_ms = int(self.settings.claim_idle_s * 1000)
        claimed = await self.client.xautoclaim(
            self.keys.stream, GROUP, self.settings.consumer, idle_ms, start_id="0-0", count=1
        )
        if claimed[1]:
            entry_id, fields = claimed[1][0]
            log.info("took over request entry %s (idle past %.0f s)", as_text(entry_id), self.settings.claim_idle_s)
            return as_text(entry_id), _fields(fields)
        read = await self.client.xreadgroup(
            GROUP, self.settings.consumer, {self.keys.stream: ">"}, count=1, block=int(self.settings.block_s * 1000)
        )
        if not read or not read[0][1]:
            return None
        entry_id, fields = read[0][1][0]
        return as_text(entry_id), _fields(fields)

    async def handle(self, entry_id: str, fields: dict[str, str]) -> None:
        request_id = fields.get("request_id", entry_id)
        try:
            request = RetrainRequest.model_validate_json(fields.get("request", ""))
        except ValidationError as error:
            await self._dead_letter(entry_id, request_id, fields, f"unreadable request: {error}", 1)
            return
        if await self.client.exists(self.keys.result(request_id)):
            await self.client.xack(self.keys.stream, GROUP, entry_id)  # a duplicate entry of a finished request
            return
        attempt = await self._deliveries(entry_id)
        if attempt > self.settings.max_attempts:
            last = await self.client.hget(self.keys.status(request_id), "error")
            error = as_text(last) if last else f"its worker died {attempt - 1} times"
            await self._dead_letter(entry_id, request_id, fields, error, attempt - 1)
            return
        try:
            result = await already_published(request, self.registry, self.store)
        except RetrainFailed as error:
            await self._dead_letter(entry_id, request_id, fields, str(error), attempt)
            return
        if result is not None:
            log.info("%s: v%d is published already; acknowledged", request_id, request.target_version)
            await self._finish(entry_id, result, "found_published")
            return
        await self._train(entry_id, request, fields, attempt)

    async def _train(self, entry_id: str, request: RetrainRequest, fields: dict[str, str], attempt: int) -> None:
        request_id, status = request.request_id, self.keys.status(request.request_id)
        await self.client.hset(
            status,
            mapping={"worker": self.settings.consumer, "attempt": attempt, "steps": request.training.steps, "step": 0},
        )
        await self.client.expire(status, KEEP_S)
        log.info("%s: training v%d (attempt %d)", request_id, request.target_version, attempt)
        progress, out_dir = Progress(), self.settings.work_dir / _dirname(request_id) / f"attempt{attempt}"
        heartbeat = asyncio.create_task(self._heartbeat(entry_id, status, progress))
        IN_PROGRESS.inc()
        try:
            result = await asyncio.to_thread(
                train_for_request,
                request,
                self.settings,
                out_dir,
                self.settings.torch_threads,
                self.settings.consumer,
                progress,
                None,
                self.settings.device,
            )
        except Exception as error:
            message = f"{type(error).__name__}: {error}"
            log.warning("%s: attempt %d failed: %s", request_id, attempt, message)
            await self.client.hset(status, "error", message)
            if attempt >= self.settings.max_attempts:
                await self._dead_letter(entry_id, request_id, fields, message, attempt)
            else:
                REQUESTS.labels("retry").inc()  # left pending: claimed again after claim_idle_s
            return
        finally:
            IN_PROGRESS.dec()
            await cancel_and_wait(heartbeat)
            shutil.rmtree(out_dir, ignore_errors=True)  # the store holds the published copy
        TRAIN_SECONDS.observe(result.train_s)
        await self._finish(entry_id, result, "not_retrained" if result.version is None else "published")

    async def _heartbeat(self, entry_id: str, status: str, progress: Progress) -> None:
        """Renew the claim (XCLAIM JUSTID resets the idle time, not the delivery count) and relay progress."""
        while True:
            await self.client.xclaim(self.keys.stream, GROUP, self.settings.consumer, 0, [entry_id], justid=True)
            fields: dict[str, Any] = {"step": progress.step, "updated": time.time()}
            if progress.loss == progress.loss:  # not NaN
                fields["loss"] = round(progress.loss, 5)
            await self.client.hset(status, mapping=fields)
            await asyncio.sleep(min(self.settings.claim_idle_s / 3, 2.0))

    async def _deliveries(self, entry_id: str) -> int:
        pending = await self.client.xpending_range(self.keys.stream, GROUP, min=entry_id, max=entry_id, count=1)
        return int(pending[0]["times_delivered"]) if pending else 1

    async def _finish(self, entry_id: str, result: RetrainResult, outcome: str) -> None:
        """Result first, then the acknowledgement: a worker killed in between leaves an entry that the next one
        acknowledges without training (the result exists)."""
        await self.client.set(self.keys.result(result.request_id), result.model_dump_json(), ex=KEEP_S)
        await self.client.xack(self.keys.stream, GROUP, entry_id)
        REQUESTS.labels(outcome).inc()
        log.info("%s: %s (%s)", result.request_id, outcome, f"v{result.version}" if result.version else "-")

    async def _dead_letter(
        self, entry_id: str, request_id: str, fields: dict[str, str], error: str, attempts: int
    ) -> None:
        entry = {**fields, "error": error, "attempts": attempts, "worker": self.settings.consumer}
        await self.client.xadd(self.keys.dead, entry)
        await self.client.set(self.keys.failed(request_id), error, ex=KEEP_S)
        await self.client.xack(self.keys.stream, GROUP, entry_id)
        REQUESTS.labels("dead_letter").inc()
        log.error("%s: dead-lettered after %d attempt(s): %s", request_id, attempts, error)


def _fields(raw: dict[Any, Any]) -> dict[str, str]:
    return {as_text(k): as_text(v) for k, v in raw.items()}


def _dirname(request_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in request_id)
