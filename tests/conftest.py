"""Shared fixtures. Redis fixtures start a real redis-server (Debian's) on a free loopback port: no fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from services.common.redis_launcher import EmbeddedRedis
from services.common.registry import connect
from tests.support.checkpoints import Family, Kind, build_checkpoint


def pytest_configure(config: pytest.Config) -> None:
    """Hold gRPC's asyncio runtime for the whole session.

    grpc.aio starts its poller thread with the first channel or server and shuts it down when the last one is gone,
    which here happens at the end of every test's event loop. That shutdown joins the poller thread and can hang
    for good when the thread is stuck writing its wake-up byte to a socket the closed loop no longer reads
    (grpc/grpc#22365, #40989): one CI run lost a test to it (a 120 s timeout in the teardown). One reference taken
    here keeps the count above zero, so the runtime is set up once and never torn down mid-session.
    """
    from grpc._cython import cygrpc

    cygrpc.init_grpc_aio()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A fresh, empty redis-server per test (no persistence); its log stays in tmp_path for debugging."""
    server = EmbeddedRedis(data_dir=tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis_client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client to ``redis_server``, closed after the test."""
    client = connect(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def own_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Family, Kind], Path]:
    """``own_checkpoint("llama" | "qwen2", "causal" | "classifier")``: a small checkpoint directory made here
    (locally trained BPE tokenizer with a ChatML template, random weights), built once per session."""
    built: dict[tuple[Family, Kind], Path] = {}

    def get(family: Family, kind: Kind) -> Path:
        if (family, kind) not in built:
            built[(family, kind)] = build_checkpoint(tmp_path_factory.mktemp(f"{family}-{kind}"), family, kind)
        return built[(family, kind)]

    return get
