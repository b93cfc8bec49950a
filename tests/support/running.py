"""A service started in-process for a test, with a client channel, its stub and health stub; stopped as a group."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from grpc import aio
from grpc_health.v1 import health_pb2_grpc

from services.common.client import open_channel
from tests.support.teardown import bounded

QUICK: dict[str, Any] = {"port": 0, "metrics_port": 0, "drain_delay_s": 0.0, "grace_period_s": 2.0}
"""Settings every test server shares: free loopback ports, no drain delay, a short grace period."""


class ServiceApp(Protocol):
    @property
    def server(self) -> Any: ...

    async def stop(self) -> None: ...


AppT = TypeVar("AppT", bound=ServiceApp)
StubT = TypeVar("StubT")


@dataclass
class RunningService(Generic[AppT, StubT]):
    app: AppT
    channel: aio.Channel
    stub: StubT
    """A client as ours are: retries UNAVAILABLE / RESOURCE_EXHAUSTED."""
    health: health_pb2_grpc.HealthStub
    raw_channel: aio.Channel
    raw_stub: StubT
    """No retries: every status exactly as the server answers it."""

    @classmethod
    def connect(cls, app: AppT, stub_class: Callable[[aio.Channel], StubT]) -> RunningService[AppT, StubT]:
        """A client of ``app`` on its loopback port."""
        target = f"127.0.0.1:{app.server.port}"
        channel, raw = open_channel(target), open_channel(target, retry=None)
        return cls(app, channel, stub_class(channel), health_pb2_grpc.HealthStub(channel), raw, stub_class(raw))

    async def stop(self) -> None:
        name = type(self.app).__name__
        await bounded(f"close {name}'s client channel", self.channel.close())
        await bounded(f"close {name}'s raw client channel", self.raw_channel.close())
        await bounded(f"stop {name}", self.app.stop())


class ServiceGroup:
    """The services a fixture started, stopped together at its end."""

    def __init__(self) -> None:
        self._running: list[RunningService[Any, Any]] = []

    def add(self, running: RunningService[AppT, StubT]) -> RunningService[AppT, StubT]:
        self._running.append(running)
        return running

    def connect(self, app: AppT, stub_class: Callable[[aio.Channel], StubT]) -> RunningService[AppT, StubT]:
        return self.add(RunningService.connect(app, stub_class))

    async def stop(self) -> None:
        for running in self._running:
            await running.stop()
