"""Fixtures that start the real verifier server (bundled models/verifier) on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from services.common.genproto.legibility.v1 import verifier_pb2_grpc
from services.verifier.app import VerifierApp, start_verifier
from services.verifier.settings import VerifierSettings
from tests.support.running import QUICK, RunningService, ServiceGroup

VERIFIER_MODEL = Path(__file__).resolve().parents[3] / "models" / "verifier"


RunningVerifier = RunningService[VerifierApp, verifier_pb2_grpc.VerifierServiceStub]


VerifierFactory = Callable[..., Awaitable[RunningVerifier]]


@pytest.fixture
async def start_server() -> AsyncIterator[VerifierFactory]:
    """Factory: start_server(**VerifierSettings fields) on free loopback ports, stopped after the test."""
    running = ServiceGroup()

    async def start(**overrides: Any) -> RunningVerifier:
        fields: dict[str, Any] = QUICK | {
            "model_path": VERIFIER_MODEL,
            "max_delay_ms": 2.0,
            "http_port": 0,
        }
        app = await start_verifier(VerifierSettings(**(fields | overrides)))
        return running.connect(app, verifier_pb2_grpc.VerifierServiceStub)

    yield start
    await running.stop()


@pytest.fixture
async def verifier(start_server: VerifierFactory) -> RunningVerifier:
    """A verifier server with default settings."""
    return await start_server()
