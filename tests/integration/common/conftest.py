"""Fixtures that start a real GrpcServer (LengthScorer) on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from grpc import aio

from services.common.client import open_channel
from services.common.genproto.legibility.v1 import verifier_pb2_grpc
from services.common.server import GrpcServer
from services.common.settings import ServerSettings
from tests.support.length_scorer import SERVICE_NAME, LengthScorer


@dataclass
class RunningScorer:
    server: GrpcServer
    scorer: LengthScorer
    channel: aio.Channel
    stub: verifier_pb2_grpc.VerifierServiceStub


ScorerFactory = Callable[..., Awaitable[RunningScorer]]


@pytest.fixture
async def start_scorer() -> AsyncIterator[ScorerFactory]:
    """Factory: start_scorer(delay_s=..., admission_limit=..., channel={...}, **ServerSettings fields)."""
    running: list[RunningScorer] = []

    async def start(
        delay_s: float = 0.0,
        admission_limit: int = 8,
        channel: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> RunningScorer:
        fields: dict[str, Any] = {"port": 0, "metrics_port": 0, "drain_delay_s": 0.0, "grace_period_s": 2.0}
        settings = ServerSettings(**(fields | overrides))
        server = GrpcServer(settings, "length_scorer")
        scorer = LengthScorer(delay_s, admission_limit)
        server.add_service(verifier_pb2_grpc.add_VerifierServiceServicer_to_server, scorer, SERVICE_NAME)
        await server.start()
        await server.set_serving(True)
        target = f"{'localhost' if settings.tls_cert_file else '127.0.0.1'}:{server.port}"
        chan = open_channel(target, **(channel or {}))
        item = RunningScorer(server, scorer, chan, verifier_pb2_grpc.VerifierServiceStub(chan))
        running.append(item)
        return item

    yield start
    for item in running:
        await item.channel.close()
        await item.server.stop()
