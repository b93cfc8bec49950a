"""Bounded admission: past a limit, refuse at once with RESOURCE_EXHAUSTED instead of queueing without end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import Gauge

from services.common.errors import Overloaded

ADMITTED = Gauge("legibility_admitted_requests", "Requests admitted and not yet finished.", ["gate"])


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
