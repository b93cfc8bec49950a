"""Shared fixtures. Redis fixtures start a real redis-server (Debian's) on a free loopback port: no fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from services.common.redis_launcher import EmbeddedRedis
from services.common.registry import connect
from tests.support.checkpoints import Family, Kind, build_checkpoint


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
