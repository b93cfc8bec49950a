"""Chaos under load: two verifier replicas (processes, watching the registry), a real Redis, and the learner's own
verifier client (round_robin over both, gRPC retries, reward deadline) scoring without pause while one replica is
SIGKILLed and restarted, Redis is SIGKILLed and restarted empty, and a new verifier version is published.

Asserted: no client call fails; while both replicas are up each takes at least 25 % of the calls; after Redis is
back and the new version is published, every replica serves it within 5 s. The figures are printed.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services.common.artifacts import ArtifactStore
from services.common.bundled_models import BUNDLED_VERIFIER
from services.common.calls import call_until
from services.common.client import open_channel
from services.common.genproto.legibility.v1 import verifier_pb2_grpc
from services.common.ports import free_port
from services.common.processes import ServiceProcess
from services.common.publish import publish_checkpoint
from services.common.redis_launcher import EmbeddedRedis
from services.common.registry import VersionRegistry, connect
from services.learner.clients.verifier import VerifierClient
from services.tasks.styles import render
from services.tasks.toy import generate

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PAIRS = [(p.question, render(p, "plain")) for p in generate("test", 8, seed=4)]
ITEMS = re.compile(r'^legibility_verifier_items_total\{rpc="Score"\} ([0-9.e+]+)$', re.M)


@dataclass
class Replica:
    name: str
    port: int
    metrics_port: int
    process: ServiceProcess | None = None

    def start(self, root: Path, redis_url: str) -> None:
        flags = ["--metrics-port", str(self.metrics_port), "--drain-delay-s", "0", "--log-format", "json"]
        flags += ["--registry-version", "0", "--watch-registry", "--reconcile-interval-s", "1", "--redis-url"]
        flags += [redis_url, "--artifact-root", str(root / "artifacts"), "--no-http-enabled", "--torch-threads", "1"]
        self.process = ServiceProcess(self.name, "services.verifier", flags, root / "logs", self.port)

    def scored(self) -> float:
        """Items this replica has scored (its own /metrics counter)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as reply:
            found = ITEMS.search(reply.read().decode())
        return float(found.group(1)) if found else 0.0

    async def version(self) -> int:
        channel = open_channel(self.process.target if self.process else "")
        try:
            return await VerifierClient(verifier_pb2_grpc.VerifierServiceStub(channel)).version()
        finally:
            await channel.close()


@dataclass
class Load:
    """Client loops scoring PAIRS through one round_robin channel, as the learner does; every outcome recorded."""

    client: VerifierClient
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    versions: set[int] = field(default_factory=set)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def loop(self, index: int) -> None:
        pairs = PAIRS[index % 4 :: 2]
        while not self.stop.is_set():
            try:
                _, version = await call_until("verifier", "Score", lambda: self.client.score(pairs), deadline_s=60)
                self.ok += 1
                self.versions.add(version)
            except Exception as error:  # every failure counts, whatever it is
                self.failures.append(repr(error))
            await asyncio.sleep(0.02)  # bounded load


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    server = EmbeddedRedis(port=free_port(), data_dir=tmp_path / "redis").start()
    yield server
    server.stop()


async def publish(redis_url: str, store: ArtifactStore) -> int:
    client = connect(redis_url)
    try:
        return (await publish_checkpoint(VersionRegistry(client), store, "verifier", BUNDLED_VERIFIER)).version
    finally:
        await client.aclose()


async def test_replica_and_redis_killed_and_a_new_version_published_under_load(
    redis: EmbeddedRedis, tmp_path: Path
) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    assert await publish(redis.url, store) == 1
    replicas = [Replica(name, free_port(), free_port()) for name in ("verifier-a", "verifier-b")]
    for replica in replicas:
        replica.start(tmp_path, redis.url)
    await asyncio.gather(*(r.process.wait_serving("", 120) for r in replicas if r.process))
    channel = open_channel("ipv4:" + ",".join(f"127.0.0.1:{r.port}" for r in replicas))
    load = Load(VerifierClient(verifier_pb2_grpc.VerifierServiceStub(channel), timeout_s=10))
    loops = [asyncio.create_task(load.loop(i)) for i in range(4)]
    try:
        # Both up: the calls spread.
        await asyncio.sleep(8)
        spread = [r.scored() for r in replicas]
        # One replica SIGKILLed, then restarted on its address.
        assert replicas[0].process is not None
        replicas[0].process.process.kill()
        replicas[0].process.stop()
        await asyncio.sleep(3)
        replicas[0].start(tmp_path, redis.url)
        assert replicas[0].process is not None
        await replicas[0].process.wait_serving("", 120)
        await asyncio.sleep(3)
        # Redis SIGKILLed and restarted empty; a new version published as soon as it is back.
        assert redis.pid is not None
        os.kill(redis.pid, signal.SIGKILL)
        await asyncio.sleep(3)
        redis.restart()
        back = time.monotonic()
        assert await publish(redis.url, store) == 2  # the next number comes from the store: Redis lost v1
        converged = None
        while converged is None and time.monotonic() - back < 60:
            if [await r.version() for r in replicas] == [2, 2]:
                converged = time.monotonic() - back
            await asyncio.sleep(0.1)
        await asyncio.sleep(2)
    finally:
        load.stop.set()
        await asyncio.gather(*loops)
        await channel.close()
        for replica in replicas:
            if replica.process is not None:
                replica.process.stop()
    share = min(spread) / sum(spread)
    print(f"calls ok {load.ok}, failed {len(load.failures)}; spread {spread} (min share {share:.2f}); "
          f"versions seen {sorted(load.versions)}; every replica on v2 {converged} s after Redis was back")  # fmt: skip
    assert load.failures == []
    assert share >= 0.25
    assert converged is not None and converged <= 5.0
    assert load.versions == {1, 2}
