"""Stopping a registry watch never hangs on a pub/sub whose close does not return (redis/redis-py#3941)."""

from __future__ import annotations

import asyncio

import pytest

from services.common import registry


class _Connection:
    def __init__(self) -> None:
        self.dropped = False

    async def disconnect(self, nowait: bool = False) -> None:
        self.dropped = nowait


class _StuckPubSub:
    """A pub/sub whose aclose waits forever, as redis-py's does when the socket never reports closed."""

    def __init__(self) -> None:
        self.connection = _Connection()

    async def aclose(self) -> None:
        await asyncio.Event().wait()


async def test_a_close_that_never_returns_is_cut_and_its_connection_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "PUBSUB_CLOSE_TIMEOUT_S", 0.05)
    stuck = _StuckPubSub()
    await asyncio.wait_for(registry._close_quietly(stuck), timeout=30)  # type: ignore[arg-type]
    assert stuck.connection.dropped
