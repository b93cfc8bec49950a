"""`legibility worker train-verifier` as real processes against a real redis-server: a killed worker's request is
finished by another with exactly one version published, a request found published is acknowledged without training,
and a poisoned request goes to the dead-letter stream after max_attempts with the worker's error."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from services.common.artifacts import ArtifactStore
from services.common.bundled_models import BUNDLED_VERIFIER
from services.common.publish import publish_checkpoint
from services.common.redis_launcher import EmbeddedRedis
from services.common.registry import VersionRegistry
from services.common.samples import LabelledSample, put_samples
from services.jobs.verifier_training.queue import GROUP, RetrainQueue
from services.jobs.verifier_training.requests import (
    PinnedSource,
    RetrainFailed,
    RetrainRequest,
    TrainingOptions,
    pin_checkpoint,
    pin_samples,
)
from tests.support.workers import Workers

pytestmark = pytest.mark.slow
STREAM = "test:retrain"


@pytest.fixture
def workers(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[Workers]:
    running = Workers(redis_server.url, tmp_path, STREAM)
    yield running
    running.stop_all()


async def _request(
    store: ArtifactStore, registry: VersionRegistry, samples: list[LabelledSample], steps: int
) -> RetrainRequest:
    """Round 0 of run ``r1``: the samples stored, the bundled verifier published as v1 to start from."""
    await publish_checkpoint(registry, store, "verifier", BUNDLED_VERIFIER)
    stored = put_samples(store, "r1-samples", 0, samples)
    return RetrainRequest(
        request_id=RetrainRequest.id_for("r1", 0),
        run_id="r1",
        round=0,
        model_name="verifier",
        target_version=2,
        samples=[pin_samples(store, stored.uri)],
        init_model=pin_checkpoint(store, ArtifactStore.uri_for("verifier", 1)),
        training=TrainingOptions(steps=steps, held_out_fraction=0.2),
    )


async def _wait_for(predicate, timeout_s: float) -> None:
    for _ in range(int(timeout_s / 0.2)):
        if await predicate():
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("condition not met")


@pytest.mark.timeout(400)
async def test_a_killed_worker_is_taken_over_and_one_version_is_published(
    toy_samples: list[LabelledSample],
    redis_server: EmbeddedRedis,
    redis_client: aioredis.Redis,
    workers: Workers,
    tmp_path: Path,
) -> None:
    store, registry = ArtifactStore(tmp_path / "store"), VersionRegistry(redis_client)
    request = await _request(store, registry, toy_samples, steps=60)
    queue = RetrainQueue(redis_client, STREAM, poll_s=0.2)
    assert await queue.submit(request) and not await queue.submit(request)  # asked twice, queued once
    assert await redis_client.xlen(STREAM) == 1

    first = await workers.start("first", store.root, "--claim-idle-s", "3")
    await _wait_for(lambda: _training_step_at_least(queue, request.request_id, 2), 180)
    os.kill(first.process.pid, signal.SIGKILL)  # mid-training: nothing published, the entry stays pending
    first.process.wait()
    assert (await registry.current("verifier")).version == 1

    await workers.start("second", store.root, "--claim-idle-s", "3")
    result = await queue.wait(request.request_id, 300)
    assert (result.version, result.trained_by) == (2, "second")
    assert 0.5 < result.metrics["auc"] <= 1.0
    assert (await queue.status(request.request_id))["attempt"] == "2"  # the kill counted as a delivery
    assert (await registry.current("verifier")).version == 2 and store.latest_version("verifier") == 2
    assert (await redis_client.xpending(STREAM, GROUP))["pending"] == 0

    # A worker that died between publishing and acknowledging leaves an entry whose version is published: the next
    # worker acknowledges it from the stored checkpoint's training.json, without training a third version.
    await redis_client.delete(queue.keys.result(request.request_id))
    await redis_client.xadd(STREAM, {"request_id": request.request_id, "request": request.model_dump_json()})
    found = await queue.wait(request.request_id, 60)
    assert (found.version, found.trained_by) == (2, "")  # no trainer: it was found, not trained
    assert found.metrics["auc"] == pytest.approx(result.metrics["auc"], abs=1e-5)
    assert (await registry.current("verifier")).version == 2 and store.latest_version("verifier") == 2


async def _training_step_at_least(queue: RetrainQueue, request_id: str, step: int) -> bool:
    return int((await queue.status(request_id)).get("step", 0)) >= step


@pytest.mark.timeout(300)
async def test_a_poisoned_request_is_dead_lettered_after_max_attempts_with_the_error(
    toy_samples: list[LabelledSample], redis_client: aioredis.Redis, workers: Workers, tmp_path: Path
) -> None:
    store, registry = ArtifactStore(tmp_path / "store"), VersionRegistry(redis_client)
    request = await _request(store, registry, toy_samples[:40], steps=5)
    poisoned = request.model_copy(update={"samples": [PinnedSource(uri=request.samples[0].uri, sha256="0" * 64)]})
    queue = RetrainQueue(redis_client, STREAM, poll_s=0.2)
    await queue.submit(poisoned)
    await workers.start("only", store.root, "--claim-idle-s", "1", "--max-attempts", "2")

    with pytest.raises(RetrainFailed, match="differs from the pinned") as failed:
        await queue.wait(poisoned.request_id, 120)
    assert "ArtifactError" in str(failed.value)
    dead = await redis_client.xrange(queue.keys.dead)
    assert len(dead) == 1
    fields = {k.decode(): v.decode() for k, v in dead[0][1].items()}
    assert (fields["request_id"], fields["attempts"], fields["worker"]) == (poisoned.request_id, "2", "only")
    assert "differs from the pinned" in fields["error"]
    assert (await redis_client.xpending(STREAM, GROUP))["pending"] == 0
    assert (await registry.current("verifier")).version == 1  # nothing published


def test_the_worker_cli_lists_its_settings() -> None:
    import subprocess

    shown = subprocess.run(
        [sys.executable, "-m", "services.cli", "worker", "train-verifier", "--help"], capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    for flag in ("--retrain-stream", "--claim-idle-s", "--max-attempts", "--device"):
        assert flag in shown.stdout
