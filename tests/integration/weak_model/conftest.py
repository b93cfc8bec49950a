"""Fixtures that start the real weak-model server (transformers engine, bundled models/weak) on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from grpc import aio
from grpc_health.v1 import health_pb2_grpc

from services.common.client import open_channel
from services.common.genproto.legibility.v1 import weak_model_pb2_grpc
from services.weak_model.app import WeakModelApp, start_weak_model
from services.weak_model.settings import WeakModelSettings

WEAK_MODEL = Path(__file__).resolve().parents[3] / "models" / "weak"


@dataclass
class RunningWeakModel:
    app: WeakModelApp
    channel: aio.Channel
    stub: weak_model_pb2_grpc.WeakModelServiceStub
    health: health_pb2_grpc.HealthStub


WeakModelFactory = Callable[..., Awaitable[RunningWeakModel]]


@pytest.fixture
async def start_server() -> AsyncIterator[WeakModelFactory]:
    """Factory: start_server(**WeakModelSettings fields) on free loopback ports, stopped after the test."""
    running: list[RunningWeakModel] = []

    async def start(**overrides: Any) -> RunningWeakModel:
        fields: dict[str, Any] = {
            "port": 0,
            "metrics_port": 0,
            "drain_delay_s": 0.0,
            "grace_period_s": 2.0,
            "model_path": WEAK_MODEL,
            "max_delay_ms": 2.0,
        }
        app = await start_weak_model(WeakModelSettings(**(fields | overrides)))
        channel = open_channel(f"127.0.0.1:{app.server.port}")
        item = RunningWeakModel(
            app, channel, weak_model_pb2_grpc.WeakModelServiceStub(channel), health_pb2_grpc.HealthStub(channel)
        )
        running.append(item)
        return item

    yield start
    for item in running:
        await item.channel.close()
        await item.app.stop()


@pytest.fixture
async def weak(start_server: WeakModelFactory) -> RunningWeakModel:
    """A weak-model server with default settings."""
    return await start_server()
