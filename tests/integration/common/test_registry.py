"""VersionRegistry against a real redis-server: CAS publishes, watcher latency, restarts, data loss."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
import redis.asyncio as aioredis
from pydantic import ValidationError

from services.common.errors import InvalidArgument, VersionConflict
from services.common.redis_launcher import EmbeddedRedis
from services.common.registry import (
    VersionRecord,
    VersionRegistry,
    connect,
    current_key,
    events_channel,
)

NAME = "verifier"


def make_record(version: int, *, uri: str | None = None, name: str = NAME) -> VersionRecord:
    return VersionRecord(
        name=name,
        version=version,
        uri=uri or f"artifact://{name}/v{version:06d}",
        sha256=hashlib.sha256(str(version).encode()).hexdigest(),
        metrics={"accuracy": 0.75, "round": version, "note": "test"},
    )


_RUNNING: list[asyncio.Task[None]] = []


class Watcher:
    """Runs ``registry.watch`` in a task and timestamps every record it yields."""

    def __init__(self, registry: VersionRegistry, name: str = NAME, **kwargs: float) -> None:
        self.seen: asyncio.Queue[tuple[float, VersionRecord]] = asyncio.Queue()
        self.task = asyncio.create_task(self._run(registry, name, kwargs))
        _RUNNING.append(self.task)

    async def _run(self, registry: VersionRegistry, name: str, kwargs: dict[str, float]) -> None:
        async for record in registry.watch(name, **kwargs):  # type: ignore[arg-type]
            self.seen.put_nowait((time.monotonic(), record))

    async def next(self, timeout_s: float = 5.0) -> tuple[float, VersionRecord]:
        return await asyncio.wait_for(self.seen.get(), timeout_s)

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


async def numsub(client: aioredis.Redis, channel: str) -> int:
    [(_, count)] = await client.pubsub_numsub(channel)
    return int(count)


async def wait_numsub(client: aioredis.Redis, channel: str, want: int, timeout_s: float = 5.0) -> float:
    """Wait until ``channel`` has ``want`` subscribers; returns the seconds waited."""
    start = time.monotonic()
    while (count := await numsub(client, channel)) != want:
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"{channel} has {count} subscribers after {timeout_s} s, want {want}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture(autouse=True)
async def _cancel_watchers() -> AsyncIterator[None]:
    """A failed test must not leave a watcher retrying against a stopped server."""
    yield
    while _RUNNING:
        task = _RUNNING.pop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def watch_client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    """A second client for the watcher, as a verifier replica would have its own."""
    client = connect(redis_server.url)
    yield client
    await client.aclose()


async def test_record_json_round_trip() -> None:
    record = make_record(3)
    back = VersionRecord.from_json(record.to_json())
    assert back == record
    assert back.created_at.tzinfo is UTC
    assert back.metrics == {"accuracy": 0.75, "round": 3, "note": "test"}
    assert isinstance(back.metrics["round"], int)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("version", 0),
        ("version", "2"),
        ("sha256", "abc"),
        ("sha256", "g" * 64),
        ("name", "Bad Name"),
        ("name", "-leading-dash"),
        ("uri", ""),
        ("created_at", datetime(2025, 1, 1)),  # naive: ambiguous, refused
        ("metrics", {"loss": float("nan")}),
    ],
)
async def test_record_validation_refuses(field: str, value: object) -> None:
    fields: dict[str, object] = {
        "name": NAME,
        "version": 1,
        "uri": "artifact://x/v000001",
        "sha256": "a" * 64,
    }
    fields[field] = value
    with pytest.raises(ValidationError) as info:
        VersionRecord(**fields)  # type: ignore[arg-type]
    assert info.value.errors()[0]["loc"][0] == field


async def test_record_normalises_sha_and_timezone() -> None:
    plus2 = timezone(timedelta(hours=2))
    record = VersionRecord(
        name=NAME, version=1, uri="u", sha256="AB" * 32, created_at=datetime(2025, 1, 1, 12, tzinfo=plus2)
    )
    assert record.sha256 == "ab" * 32
    assert record.created_at == datetime(2025, 1, 1, 10, tzinfo=UTC)
    assert record.created_at.utcoffset() == timedelta(0)


async def test_invalid_model_name_is_refused(redis_client: aioredis.Redis) -> None:
    registry = VersionRegistry(redis_client)
    with pytest.raises(InvalidArgument) as info:
        await registry.current("../etc")
    assert info.value.field == "name"
    assert current_key("a.b_c-1") == "legibility:model:a.b_c-1:current"
    assert events_channel("a") == "legibility:model:a:events"


async def test_published_version_reaches_running_watcher_before_any_reconcile(
    redis_client: aioredis.Redis, watch_client: aioredis.Redis
) -> None:
    registry = VersionRegistry(redis_client)
    assert await registry.current(NAME) is None
    # A long reconcile period: only pub/sub can deliver within the second.
    watcher = Watcher(VersionRegistry(watch_client), reconcile_interval_s=30.0)
    await wait_numsub(redis_client, events_channel(NAME), 1)

    record = make_record(1)
    t0 = time.monotonic()
    assert await registry.publish(record) == record
    seen_at, seen = await watcher.next(timeout_s=2.0)
    latency = seen_at - t0
    print(f"publish -> watcher latency: {latency * 1000:.1f} ms")
    assert seen == record
    assert latency < 10.0  # pub/sub; the 30 s reconcile cannot have delivered it
    assert await registry.current(NAME) == record

    # And the next version too, in order.
    t0 = time.monotonic()
    await registry.publish(make_record(2))
    seen_at, seen = await watcher.next(timeout_s=2.0)
    assert seen.version == 2
    assert seen_at - t0 < 1.0
    assert watcher.seen.empty()
    await watcher.stop()


async def test_lower_or_equal_version_is_refused(redis_client: aioredis.Redis) -> None:
    registry = VersionRegistry(redis_client)
    original = await registry.publish(make_record(2))

    for offered in (2, 1):
        with pytest.raises(VersionConflict) as info:
            await registry.publish(make_record(offered, uri=f"artifact://{NAME}/other"))
        assert (info.value.name, info.value.offered, info.value.current) == (NAME, offered, 2)

    assert await registry.current(NAME) == original
    raw = await redis_client.get(current_key(NAME))
    assert VersionRecord.from_json(raw) == original
    assert (await registry.publish(make_record(3))).version == 3
    current = await registry.current(NAME)
    assert current is not None and current.version == 3


async def test_concurrent_publishes_of_same_version_exactly_one_wins(redis_server: EmbeddedRedis) -> None:
    clients = [connect(redis_server.url) for _ in range(4)]
    registries = [VersionRegistry(c) for c in clients]
    listener = clients[0].pubsub()
    await listener.subscribe(events_channel(NAME))
    try:
        n = 24
        offers = [make_record(1, uri=f"artifact://{NAME}/candidate-{i}") for i in range(n)]
        results = await asyncio.gather(
            *(registries[i % len(registries)].publish(r) for i, r in enumerate(offers)),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, VersionRecord)]
        conflicts = [r for r in results if isinstance(r, VersionConflict)]
        assert len(winners) == 1
        assert len(conflicts) == n - 1
        assert {c.current for c in conflicts} == {1}
        assert await registries[0].current(NAME) == winners[0]

        # Exactly one announcement went out, carrying the winner.
        messages = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            msg = await listener.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if msg is not None:
                messages.append(msg)
        assert len(messages) == 1
        assert VersionRecord.from_json(messages[0]["data"]) == winners[0]

        # Racing different versions: the highest always ends up current.
        versions = list(range(2, 22))
        results = await asyncio.gather(
            *(registries[v % len(registries)].publish(make_record(v)) for v in reversed(versions)),
            return_exceptions=True,
        )
        accepted = [r.version for r in results if isinstance(r, VersionRecord)]
        assert all(isinstance(r, VersionRecord | VersionConflict) for r in results)
        assert 21 in accepted
        current = await registries[0].current(NAME)
        assert current is not None and current.version == 21
    finally:
        await listener.aclose()
        for client in clients:
            await client.aclose()


async def test_watcher_starts_after_after_version(redis_client: aioredis.Redis, watch_client: aioredis.Redis) -> None:
    registry = VersionRegistry(redis_client)
    await registry.publish(make_record(3))
    watcher = Watcher(VersionRegistry(watch_client), reconcile_interval_s=0.2, after_version=3)
    await wait_numsub(redis_client, events_channel(NAME), 1)
    await asyncio.sleep(0.5)  # two reconcile periods: the current version 3 must not be yielded
    assert watcher.seen.empty()
    await registry.publish(make_record(4))
    _, seen = await watcher.next(timeout_s=2.0)
    assert seen.version == 4
    await watcher.stop()


async def test_watcher_yields_current_record_at_start(redis_client: aioredis.Redis) -> None:
    registry = VersionRegistry(redis_client)
    await registry.publish(make_record(5))
    watcher = Watcher(registry, reconcile_interval_s=5.0)
    t0 = time.monotonic()
    seen_at, seen = await watcher.next(timeout_s=2.0)
    assert seen.version == 5
    assert seen_at - t0 < 1.0
    await watcher.stop()


async def test_watcher_catches_up_after_redis_restart(
    redis_server: EmbeddedRedis, redis_client: aioredis.Redis, watch_client: aioredis.Redis
) -> None:
    registry = VersionRegistry(redis_client)
    watcher = Watcher(VersionRegistry(watch_client), reconcile_interval_s=0.5)
    await wait_numsub(redis_client, events_channel(NAME), 1)
    versions = []
    for version in (1, 2):  # one at a time: two quick publishes may reach a starting watcher as one key read
        await registry.publish(make_record(version))
        versions.append((await watcher.next(2.0))[1].version)
    assert versions == [1, 2]

    port = redis_server.port
    await asyncio.to_thread(redis_server.restart)  # empty afterwards: no persistence
    assert redis_server.port == port
    assert await registry.current(NAME) is None

    t0 = time.monotonic()
    await registry.publish(make_record(3))
    seen_at, seen = await watcher.next(timeout_s=5.0)
    latency = seen_at - t0
    print(f"restart catch-up latency: {latency * 1000:.1f} ms")
    assert seen.version == 3
    assert latency < 3.0
    # The watcher is subscribed again on the new server.
    await wait_numsub(redis_client, events_channel(NAME), 1, timeout_s=3.0)
    await watcher.stop()


async def test_watcher_survives_redis_down_and_misses_nothing(
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    watch_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="services.common.registry")
    registry = VersionRegistry(redis_client)
    await registry.publish(make_record(1))
    watcher = Watcher(VersionRegistry(watch_client), reconcile_interval_s=0.5)
    assert (await watcher.next(2.0))[1].version == 1

    await asyncio.to_thread(redis_server.stop)
    cpu0 = time.process_time()
    await asyncio.sleep(2.0)
    cpu_down = time.process_time() - cpu0
    print(f"CPU while Redis was down for 2 s: {cpu_down * 1000:.0f} ms")
    assert cpu_down < 0.3  # backing off, not spinning
    assert not watcher.task.done()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "unavailable" in r.getMessage()]
    assert 1 <= len(warnings) <= 2  # one per outage (plus one every 10th retry), not one per retry

    await asyncio.to_thread(redis_server.start)  # same port, empty
    # Published while the watcher is mid-backoff: pub/sub misses it, the key read on reconnect must not.
    t0 = time.monotonic()
    await registry.publish(make_record(2))
    seen_at, seen = await watcher.next(timeout_s=5.0)
    latency = seen_at - t0
    print(f"catch-up latency after outage: {latency * 1000:.1f} ms")
    assert seen.version == 2
    assert latency < 3.0
    assert any("Redis is back" in r.getMessage() for r in caplog.records)
    await watcher.stop()


async def test_lower_version_after_data_loss_is_ignored(
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    watch_client: aioredis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="services.common.registry")
    registry = VersionRegistry(redis_client)
    watcher = Watcher(VersionRegistry(watch_client), reconcile_interval_s=0.5)
    await wait_numsub(redis_client, events_channel(NAME), 1)
    await registry.publish(make_record(5))
    assert (await watcher.next(2.0))[1].version == 5

    await asyncio.to_thread(redis_server.restart)
    await wait_numsub(redis_client, events_channel(NAME), 1, timeout_s=3.0)
    caplog.clear()
    await registry.publish(make_record(1))  # accepted by the empty Redis
    await asyncio.sleep(1.6)  # the channel and three reconciles all offer version 1
    assert watcher.seen.empty()
    ignored = [r for r in caplog.records if "ignoring" in r.getMessage() and "version 1 " in r.getMessage()]
    assert len(ignored) == 1  # logged once, not on every reconcile

    await registry.publish(make_record(6))
    _, seen = await watcher.next(timeout_s=2.0)
    assert seen.version == 6
    await watcher.stop()


async def test_watcher_does_not_busy_loop(redis_client: aioredis.Redis, watch_client: aioredis.Redis) -> None:
    watcher = Watcher(VersionRegistry(watch_client), reconcile_interval_s=0.5)
    await wait_numsub(redis_client, events_channel(NAME), 1)
    await redis_client.config_resetstat()
    cpu0 = time.process_time()
    await asyncio.sleep(2.0)
    cpu = time.process_time() - cpu0
    stats = await redis_client.info("commandstats")
    gets = int(stats.get("cmdstat_get", {}).get("calls", 0))
    total = sum(int(v["calls"]) for v in stats.values())
    print(f"over 2 s with reconcile 0.5 s: {gets} GETs, {total} commands in all, {cpu * 1000:.0f} ms CPU")
    assert 3 <= gets <= 5
    assert total <= 15  # GETs, our own CONFIG/INFO, an occasional health-check PING
    assert cpu < 0.3
    await watcher.stop()


async def test_cancelling_watcher_is_clean(
    redis_client: aioredis.Redis, watch_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="services.common.registry")
    watcher = Watcher(VersionRegistry(watch_client), reconcile_interval_s=0.5)
    await wait_numsub(redis_client, events_channel(NAME), 1)
    watcher.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watcher.task
    assert watcher.task.cancelled()
    # The pub/sub connection was closed: Redis drops the subscription.
    waited = await wait_numsub(redis_client, events_channel(NAME), 0, timeout_s=2.0)
    assert waited < 2.0
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    # The watcher's client is still usable afterwards.
    assert await watch_client.ping() is True


async def test_a_cancel_lost_below_the_watch_still_ends_it(
    redis_client: aioredis.Redis, watch_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the pub/sub read loses the cancel (answers "no message" instead, as a read timeout expiring in the same
    instant can make it), the watch still ends at its next step instead of running on and hanging whoever stops it."""
    get_message = aioredis.client.PubSub.get_message
    lost: list[bool] = []

    async def losing_the_cancel(self: aioredis.client.PubSub, *args: object, **kwargs: object) -> object:
        try:
            return await get_message(self, *args, **kwargs)
        except asyncio.CancelledError:
            if lost:  # only the first: a second cancel ends a watch that ran on, so a failure cannot hang
                raise
            lost.append(True)
            return None

    monkeypatch.setattr(aioredis.client.PubSub, "get_message", losing_the_cancel)
    watcher = Watcher(VersionRegistry(watch_client), reconcile_interval_s=30.0)
    await wait_numsub(redis_client, events_channel(NAME), 1)
    await asyncio.sleep(0.2)  # inside the read now
    watcher.task.cancel()
    await asyncio.wait([watcher.task], timeout=10)  # a bound against the hang this guards, not a speed
    assert lost == [True]
    assert watcher.task.done(), "the watch ran on after its task was cancelled"
    assert watcher.task.cancelled()
    await wait_numsub(redis_client, events_channel(NAME), 0)  # and its pub/sub was closed
