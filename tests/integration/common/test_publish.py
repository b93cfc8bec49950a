"""Publishing against a real Redis: the next version survives Redis losing its data, and a refused publish leaves
no artifact behind (its number stays usable)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from services.common.artifacts import ArtifactStore
from services.common.errors import VersionConflict
from services.common.publish import publish_checkpoint
from services.common.registry import VersionRecord, VersionRegistry
from tests.unit.common.test_artifacts import make_checkpoint


async def test_after_redis_loses_its_data_the_next_version_comes_from_the_store(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    store, registry = ArtifactStore(tmp_path / "store"), VersionRegistry(redis_client)
    checkpoint = make_checkpoint(tmp_path / "ckpt")
    assert [(await publish_checkpoint(registry, store, "verifier", checkpoint)).version for _ in range(2)] == [1, 2]
    await redis_client.flushall()  # Redis restarted without persistence
    record = await publish_checkpoint(registry, store, "verifier", checkpoint)
    assert record.version == 3 and record.uri == "artifact://verifier/v000003"
    assert store.latest_version("verifier") == 3 and store.latest_version("weak") == 0


async def test_a_publish_refused_by_the_registry_removes_what_it_stored(
    redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    store, registry = ArtifactStore(tmp_path / "store"), VersionRegistry(redis_client)
    checkpoint = make_checkpoint(tmp_path / "ckpt")
    first = await publish_checkpoint(registry, store, "verifier", checkpoint)
    # Another publisher's record (version 5) got in first, from a store this one does not see.
    await registry.publish(VersionRecord(name="verifier", version=5, uri=first.uri, sha256=first.sha256))
    with pytest.raises(VersionConflict):
        await publish_checkpoint(registry, store, "verifier", checkpoint, version=4)
    assert not store.resolve("artifact://verifier/v000004").exists()
    assert store.latest_version("verifier") == 1
    # The default goes past the registry's 5 (the store only knows 1).
    assert (await publish_checkpoint(registry, store, "verifier", checkpoint)).version == 6
