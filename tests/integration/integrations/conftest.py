"""Fixtures: the real weak-model and verifier servers (bundled models) on loopback, one pair per test module."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from services.common.client import open_channel
from services.common.genproto.legibility.v1 import verifier_pb2_grpc
from services.learner.clients.verifier import VerifierClient
from services.learner.integrations.settings import IntegrationSettings
from services.tasks import toy
from tests.integration.learner.conftest import MODELS, Dependencies, start_dependencies

__all__ = ["MODELS", "PROBLEMS", "Services"]

PROBLEMS = toy.generate("test", 8, seed=3)


class Services(Dependencies):
    """The services an adapter calls, and how to point an adapter at them."""

    def env(self, **extra: str) -> dict[str, str]:
        """``LEGIBILITY_*`` variables pointing an adapter at these servers."""
        return {
            "LEGIBILITY_WEAK_MODEL_TARGET": self.weak.server.address,
            "LEGIBILITY_VERIFIER_TARGET": self.verifier.server.address,
            **{f"LEGIBILITY_{key.upper()}": value for key, value in extra.items()},
        }

    def settings(self, **fields: object) -> IntegrationSettings:
        return IntegrationSettings(**(self.targets | fields))  # type: ignore[arg-type]

    async def scores(self, pairs: list[tuple[str, str]]) -> list[float]:
        """The verifier's scores of (problem, solution) pairs, asked directly (the adapters' reference)."""
        channel = open_channel(self.verifier.server.address)
        try:
            scores, _ = await VerifierClient(verifier_pb2_grpc.VerifierServiceStub(channel)).score(pairs)
        finally:
            await channel.close()
        return scores


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def services() -> AsyncIterator[Services]:
    running = Services(*await start_dependencies())
    yield running
    await running.stop()
