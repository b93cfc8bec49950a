"""Fixtures that start the real verifier server (bundled models/verifier) on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from grpc import aio
from grpc_health.v1 import health_pb2_grpc

from services.common.client import open_channel
from services.common.genproto.legibility.v1 import verifier_pb2_grpc
from services.verifier.app import VerifierApp, start_verifier
from services.verifier.settings import VerifierSettings

VERIFIER_MODEL = Path(__file__).resolve().parents[3] / "models" / "verifier"


@dataclass
class RunningVerifier:
    app: VerifierApp
    channel: aio.Channel
    stub: verifier_pb2_grpc.VerifierServiceStub
    health: health_pb2_grpc.HealthStub


VerifierFactory = Callable[..., Awaitable[RunningVerifier]]


@pytest.fixture
async def start_server() -> AsyncIterator[VerifierFactory]:
    """Factory: start_server(**VerifierSettings fields) on free loopback ports, stopped after the test."""
    running: list[RunningVerifier] = []

    async def start(**overrides: Any) -> RunningVerifier:
        fields: dict[str, Any] = {
            "port": 0,
            "metrics_port": 0,
            "drain_delay_s": 0.0,
            "grace_period_s": 2.0,
            "model_path": VERIFIER_MODEL,
            "max_delay_ms": 2.0,
            "http_port": 0,
        }
        app = await start_verifier(VerifierSettings(**(fields | overrides)))
        channel = open_channel(f"127.0.0.1:{app.server.port}")
        item = RunningVerifier(
            app, channel, verifier_pb2_grpc.VerifierServiceStub(channel), health_pb2_grpc.HealthStub(channel)
        )
        running.append(item)
        return item

    yield start
    for item in running:
        await item.channel.close()
        await item.app.stop()


@pytest.fixture
async def verifier(start_server: VerifierFactory) -> RunningVerifier:
    """A verifier server with default settings."""
    return await start_server()
