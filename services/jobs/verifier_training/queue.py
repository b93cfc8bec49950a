"""The retraining queue in Redis: one stream of requests, read by workers in a consumer group.

Keys, all under the stream's name ``S`` (``LEGIBILITY_RETRAIN_STREAM``, default ``legibility:retrain``):

- ``S``: the stream of requests, read with ``XREADGROUP`` in group ``train-verifier``; a worker acknowledges
  (``XACK``) only after the version is published, so a worker that dies leaves the entry pending and another
  takes it over with ``XAUTOCLAIM`` once it has been idle ``claim_idle_s`` (a live worker keeps its entry fresh).
- ``S:dead``: the dead-letter stream: requests given up after ``max_attempts`` deliveries, with the last error.
- ``S:request:<id>``: the request itself, set only if absent together with the ``XADD`` (one Lua script), so a
  learner that restarts while it waits asks again without queueing a second request.
- ``S:status:<id>``: a hash the worker updates while training (worker, attempt, step, steps, loss, error).
- ``S:result:<id>`` / ``S:failed:<id>``: the outcome the learner waits for (a :class:`RetrainResult` as JSON, or
  the error text).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from services.jobs.verifier_training.requests import RetrainFailed, RetrainRequest, RetrainResult

DEFAULT_STREAM = "legibility:retrain"
GROUP = "train-verifier"
KEEP_S = 7 * 24 * 3600
"""How long a request's keys (request, status, result, failure) outlive it: long enough for any run to resume."""

_SUBMIT_LUA = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  return redis.call('XADD', KEYS[2], '*', 'request_id', ARGV[3], 'request', ARGV[1])
end
return false
"""


@dataclass(frozen=True)
class QueueKeys:
    stream: str = DEFAULT_STREAM

    @property
    def dead(self) -> str:
        return f"{self.stream}:dead"

    def request(self, request_id: str) -> str:
        return f"{self.stream}:request:{request_id}"

    def status(self, request_id: str) -> str:
        return f"{self.stream}:status:{request_id}"

    def result(self, request_id: str) -> str:
        return f"{self.stream}:result:{request_id}"

    def failed(self, request_id: str) -> str:
        return f"{self.stream}:failed:{request_id}"


StatusCallback = Callable[[dict[str, str]], None]


class RetrainQueue:
    """The learner's side: submit a request once, then wait for its result, relaying the worker's progress."""

    def __init__(self, client: Redis, stream: str = DEFAULT_STREAM, poll_s: float = 0.5) -> None:
        self.client = client
        self.keys = QueueKeys(stream)
        self.poll_s = poll_s
        self._submit = client.register_script(_SUBMIT_LUA)

    async def submit(self, request: RetrainRequest) -> bool:
        """Queue ``request`` unless it was queued before (by this learner or an earlier life of it); True if new."""
        keys = [self.keys.request(request.request_id), self.keys.stream]
        added = await self._submit(keys=keys, args=[request.model_dump_json(), KEEP_S, request.request_id])
        return bool(added)

    async def result(self, request_id: str) -> RetrainResult | None:
        raw = await self.client.get(self.keys.result(request_id))
        return None if raw is None else RetrainResult.model_validate_json(raw)

    async def failure(self, request_id: str) -> str | None:
        raw = await self.client.get(self.keys.failed(request_id))
        return None if raw is None else as_text(raw)

    async def status(self, request_id: str) -> dict[str, str]:
        raw = await self.client.hgetall(self.keys.status(request_id))
        return {as_text(k): as_text(v) for k, v in raw.items()}

    async def wait(self, request_id: str, timeout_s: float, on_status: StatusCallback | None = None) -> RetrainResult:
        """The request's result; raises :class:`RetrainFailed` with the worker's error when it was dead-lettered,
        or when ``timeout_s`` passes with no outcome."""
        deadline = time.monotonic() + timeout_s
        seen: dict[str, str] = {}
        while True:
            if (result := await self.result(request_id)) is not None:
                return result
            if (error := await self.failure(request_id)) is not None:
                raise RetrainFailed(f"verifier retraining {request_id} failed: {error}")
            if on_status is not None and (status := await self.status(request_id)) and status != seen:
                seen = status
                on_status(status)
            if time.monotonic() > deadline:
                raise RetrainFailed(
                    f"verifier retraining {request_id}: no result after {timeout_s:.0f} s (retrain_timeout_s); "
                    f"is a `legibility worker train-verifier` reading {self.keys.stream}?"
                )
            await asyncio.sleep(self.poll_s)


def as_text(value: bytes | str) -> str:
    """A Redis reply as text (the clients here do not decode responses)."""
    return value.decode() if isinstance(value, bytes) else value
