"""A call to another service that keeps trying through a replica restart, up to a deadline, then fails loudly.

gRPC's own retry policy (``services/common/client.py``) covers a blip: five attempts within a few seconds. A reward
call inside an RL step must also ride out a replica that restarts or a rollout of the Deployment (tens of
seconds), and must never turn a failure into a reward of 0: :func:`call_until` repeats UNAVAILABLE,
RESOURCE_EXHAUSTED and DEADLINE_EXCEEDED with jittered exponential backoff until ``deadline_s``, and then raises
:class:`ServiceCallFailed` naming the service, the method, the last status and how many attempts were made.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from grpc import aio

RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
)
_T = TypeVar("_T")


class ServiceCallFailed(RuntimeError):
    """A call that did not succeed within its deadline, or failed for good (a status that retrying cannot fix)."""

    def __init__(self, service: str, method: str, code: grpc.StatusCode, attempts: int, details: str) -> None:
        super().__init__(f"{service} {method} failed: {code.name} after {attempts} attempts: {details}")
        self.service, self.method, self.code, self.attempts = service, method, code, attempts


def _grpc_attempts(error: aio.AioRpcError) -> int:
    """Attempts gRPC's own retry policy made for this call (it reports the earlier ones in trailing metadata)."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-previous-rpc-attempts":
            return 1 + int(value)
    return 1


async def call_until(
    service: str,
    method: str,
    call: Callable[[], Awaitable[_T]],
    *,
    deadline_s: float,
    initial_backoff_s: float = 0.25,
    max_backoff_s: float = 5.0,
) -> _T:
    """``await call()``, repeated on retryable statuses until ``deadline_s`` has passed; raises ServiceCallFailed."""
    end = time.monotonic() + deadline_s
    attempts, backoff = 0, initial_backoff_s
    while True:
        try:
            return await call()
        except aio.AioRpcError as error:
            attempts += _grpc_attempts(error)
            pause = backoff * random.uniform(0.5, 1.0)
            if error.code() not in RETRYABLE or time.monotonic() + pause >= end:
                raise ServiceCallFailed(service, method, error.code(), attempts, error.details() or "") from error
        await asyncio.sleep(pause)
        backoff = min(backoff * 2, max_backoff_s)
