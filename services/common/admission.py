"""Bounded admission: past a limit, refuse at once (Overloaded, RESOURCE_EXHAUSTED) instead of queueing without end.

- :class:`AdmissionGate` bounds whole requests inside a handler.
- :func:`admit` is the items rule every engine applies: refused when more than ``max_queue_size`` would wait.
- :class:`EngineAdmission` is the whole gate in front of an engine that forms its own batches (vLLM): it counts the
  items in flight, runs each admitted call as a task it can cancel, and on a stop fails the running calls with
  NotReady. The micro-batchers count their own queues and call :func:`admit`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from prometheus_client import Gauge

from services.common.errors import NotReady, Overloaded
from services.common.tasks import NewCancels

T = TypeVar("T")

ADMITTED = Gauge("legibility_admitted_requests", "Requests admitted and not yet finished.", ["gate"])
QUEUE_DEPTH = Gauge("legibility_batch_queue_depth", "Items admitted and waiting for a batch.", ["batcher"])


def admit(name: str, waiting: int, adding: int, max_queue_size: int) -> None:
    """Refuse at once (Overloaded) when ``adding`` more items would put more than ``max_queue_size`` waiting."""
    if waiting + adding > max_queue_size:
        raise Overloaded(
            f"{name}: {waiting} items waiting, {adding} more would pass max_queue_size {max_queue_size}; retry later"
        )


class EngineAdmission:
    """Admission in front of an engine that schedules its own batches: up to ``max_running`` items run at once, the
    ones beyond wait inside the engine, and past ``max_queue_size`` waiting a call is refused at once.

    Items count from admission to their call's end, whatever the engine does with them meanwhile; ``queue_depth``
    (also the ``legibility_batch_queue_depth`` gauge, labelled ``name``) is the count beyond ``max_running``.
    """

    def __init__(self, name: str, *, max_running: int, max_queue_size: int) -> None:
        if max_running < 1 or max_queue_size < 1:
            raise ValueError("max_running and max_queue_size must be >= 1")
        self.name = name
        self.max_running = max_running
        self.max_queue_size = max_queue_size
        self._in_flight = 0
        self._running: set[asyncio.Task[object]] = set()
        self._open = False
        self._depth = QUEUE_DEPTH.labels(name)

    @property
    def queue_depth(self) -> int:
        """Items admitted beyond the ``max_running`` the engine runs at once."""
        return max(0, self._in_flight - self.max_running)

    def open(self) -> None:
        """Admit calls; before this (and after :meth:`close`) they raise NotReady."""
        self._open = True

    async def close(self) -> None:
        """Refuse new calls; every running one fails with NotReady (nothing hangs)."""
        self._open = False
        running, self._running = list(self._running), set()
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def run(self, items: int, work: Callable[[], Awaitable[T]], *, what: str | None = None) -> T:
        """``await work()`` for a call of ``items`` items, once admitted; ``what`` names the call in errors.

        ``work`` is called only after admission, so a refused call leaves no coroutine behind. Cancelling the caller
        cancels the work (the engine drops its requests); :meth:`close` cancelling it raises NotReady instead.
        """
        name = what or self.name
        if not self._open:
            raise NotReady(f"{name}: not running")
        if max(0, self._in_flight + items - self.max_running) > self.max_queue_size:
            raise Overloaded(
                f"{name}: {self.queue_depth} items waiting, {items} more would pass max_queue_size "
                f"{self.max_queue_size}; retry later"
            )
        caller = NewCancels()
        self._in_flight += items
        self._depth.set(self.queue_depth)
        task = asyncio.ensure_future(work())
        self._running.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            if caller.arrived():  # the caller itself was cancelled
                raise
            raise NotReady(f"{name}: stopped") from None  # close() cancelled the work
        finally:
            self._running.discard(task)
            self._in_flight -= items
            self._depth.set(self.queue_depth)


class AdmissionGate:
    """At most ``limit`` requests inside at once; the next one gets :class:`Overloaded` immediately."""

    def __init__(self, name: str, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"admission limit must be >= 1, got {limit}")
        self.name = name
        self.limit = limit
        self._inside = 0

    @property
    def inside(self) -> int:
        return self._inside

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        # Single event loop: the check and the increment cannot interleave with another coroutine.
        if self._inside >= self.limit:
            raise Overloaded(f"{self.name}: {self._inside} requests in flight (limit {self.limit}); retry later")
        self._inside += 1
        ADMITTED.labels(self.name).inc()
        try:
            yield
        finally:
            self._inside -= 1
            ADMITTED.labels(self.name).dec()
