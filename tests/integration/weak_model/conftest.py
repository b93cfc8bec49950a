"""Fixtures that start the real weak-model server (transformers engine, bundled models/weak) on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from services.common.genproto.legibility.v1 import weak_model_pb2_grpc
from services.weak_model.app import WeakModelApp, start_weak_model
from services.weak_model.settings import WeakModelSettings
from tests.support.running import QUICK, RunningService, ServiceGroup

WEAK_MODEL = Path(__file__).resolve().parents[3] / "models" / "weak"


RunningWeakModel = RunningService[WeakModelApp, weak_model_pb2_grpc.WeakModelServiceStub]


WeakModelFactory = Callable[..., Awaitable[RunningWeakModel]]


async def serve_weak_model(**overrides: Any) -> RunningWeakModel:
    """A weak-model server (bundled model) on free loopback ports, with a client; the caller stops it."""
    fields: dict[str, Any] = QUICK | {"model_path": WEAK_MODEL, "max_delay_ms": 2.0}
    app = await start_weak_model(WeakModelSettings(**(fields | overrides)))
    return RunningWeakModel.connect(app, weak_model_pb2_grpc.WeakModelServiceStub)


@pytest.fixture
async def start_server() -> AsyncIterator[WeakModelFactory]:
    """Factory: start_server(**WeakModelSettings fields) on free loopback ports, stopped after the test."""
    running = ServiceGroup()

    async def start(**overrides: Any) -> RunningWeakModel:
        return running.add(await serve_weak_model(**overrides))

    yield start
    await running.stop()


@pytest.fixture
async def weak(start_server: WeakModelFactory) -> RunningWeakModel:
    """A weak-model server with default settings."""
    return await start_server()
