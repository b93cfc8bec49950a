"""Hot swap under load: a newer registry version replaces the served one with no failed call; a bad one is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import psutil
import pytest
from prometheus_client import REGISTRY

from services.common.artifacts import ArtifactStore
from services.common.genproto.legibility.v1 import verifier_pb2
from services.common.publish import publish_checkpoint
from services.common.registry import VersionRecord, VersionRegistry, connect
from services.decoding.vllm_supervisor import engine_processes
from services.verifier.forward_process import ProcessTorchScorer
from services.verifier.scorers import VllmScorer
from tests.integration.verifier.conftest import VERIFIER_MODEL

PROBLEM = "Ann has 4 bags of 7 pens. She gets 3 more. How many pens now?"
SOLUTION = "4*7=28.\n28+3=31.\n#### 31"
ITEMS = [verifier_pb2.ScoreItem(problem=PROBLEM, solution=SOLUTION)]
INFO = verifier_pb2.VerifierServiceGetModelInfoRequest()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": "verifier", **labels}) or 0.0


def refused(reason: str) -> float:
    return sample("legibility_model_refused_versions_total", reason=reason)


async def wait_for(condition, within_s: float = 20.0) -> None:
    """Poll ``condition`` until true; TimeoutError after ``within_s``."""
    async with asyncio.timeout(within_s):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
async def registry(redis_client) -> VersionRegistry:
    return VersionRegistry(redis_client)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


@pytest.fixture
async def watching(request, start_server, redis_server, registry, store):
    """A verifier serving registry version 1 and watching for newer ones (hf forward passes in a thread, or in a
    child process per checkpoint when the test asks for ``process``, or a vLLM engine per checkpoint: ``vllm``)."""
    await publish_checkpoint(registry, store, "verifier", VERIFIER_MODEL)
    mode = getattr(request, "param", "thread")
    return await start_server(
        **({"engine": "vllm"} if mode == "vllm" else {"hf_worker": mode}),
        registry_version=0,
        watch_registry=True,
        reconcile_interval_s=0.5,
        redis_url=redis_server.url,
        artifact_root=store.root,
    )


async def served_version(verifier) -> int:
    return (await verifier.stub.GetModelInfo(INFO, timeout=5)).model.version


@pytest.mark.parametrize(
    "watching",
    ["thread", "process", pytest.param("vllm", marks=[pytest.mark.slow, pytest.mark.timeout(600)])],
    indirect=True,
)
async def test_swap_under_load_fails_no_call_and_min_version_waits_for_it(watching, registry, store) -> None:
    verifier = watching
    assert await served_version(verifier) == 1
    first = verifier.app.model
    first_engine: list[psutil.Process] = []  # the old version's vLLM engine core and its worker
    if isinstance(first._scorer, VllmScorer):
        first_engine = [psutil.Process(core.pid) for core in engine_processes(first._scorer._llm)]
        first_engine += [child for core in first_engine for child in core.children(recursive=True)]
        assert len(first_engine) >= 2
    swaps_before = sample("legibility_model_swaps_total")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await verifier.stub.Score(verifier_pb2.ScoreRequest(items=ITEMS, min_version=2), timeout=5)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    stop = asyncio.Event()
    failures: list[grpc.aio.AioRpcError] = []
    # Per client: (loop time the call started, version it reported).
    seen: list[list[tuple[float, int]]] = [[] for _ in range(8)]
    loop = asyncio.get_running_loop()

    async def client(log: list[tuple[float, int]]) -> None:
        while not stop.is_set():
            started = loop.time()
            try:
                response = await verifier.stub.Score(verifier_pb2.ScoreRequest(items=ITEMS), timeout=10)
            except grpc.aio.AioRpcError as exc:
                failures.append(exc)
            else:
                log.append((started, response.model.version))

    clients = [asyncio.ensure_future(client(log)) for log in seen]
    try:
        await asyncio.sleep(0.5)
        await publish_checkpoint(registry, store, "verifier", VERIFIER_MODEL)
        # A child process or a vLLM engine starts (~30 s on 2 cores, beside the one serving).
        await wait_for(lambda: verifier.app.model.weights.version == 2, within_s=240)
        swapped_at = loop.time()  # attach happened before this: any call started later must see version 2
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*clients)

    assert failures == []
    for log in seen:
        versions = [version for _, version in log]
        assert versions == sorted(versions)  # never back to version 1 once a client saw 2
        assert set(versions) <= {1, 2}
    before = [v for log in seen for started, v in log if started < swapped_at]
    after = [v for log in seen for started, v in log if started >= swapped_at]
    assert before.count(1) >= 8 and len(after) >= 8
    assert after == [2] * len(after)
    assert sample("legibility_model_swaps_total") == swaps_before + 1
    assert sample("legibility_model_version") == 2
    assert await served_version(verifier) == 2
    response = await verifier.stub.Score(verifier_pb2.ScoreRequest(items=ITEMS, min_version=2), timeout=5)
    assert response.model.version == 2
    if isinstance(first._scorer, ProcessTorchScorer):  # the old checkpoint's child ends once its calls have drained
        await wait_for(lambda: not first._scorer._process.is_alive(), within_s=60)
        assert verifier.app.model._scorer._process.is_alive()
    if isinstance(first._scorer, VllmScorer):  # the old engine is shut down once its calls drain; the new one serves
        assert isinstance(verifier.app.model._scorer, VllmScorer)
        _, alive = psutil.wait_procs(first_engine, timeout=60)
        assert alive == []
        assert first._scorer._llm is None and all(
            p.is_alive() for p in engine_processes(verifier.app.model._scorer._llm)
        )


async def test_corrupt_or_unloadable_versions_are_refused_and_the_old_one_keeps_serving(
    watching, registry, store, tmp_path: Path
) -> None:
    verifier = watching
    await publish_checkpoint(registry, store, "verifier", VERIFIER_MODEL)
    await wait_for(lambda: verifier.app.model.weights.version == 2)
    v2 = verifier.app.model
    swaps = sample("legibility_model_swaps_total")

    # v3: a byte of the stored weights flipped after storing, before the replica verifies it.
    stored = store.put_checkpoint("verifier", 3, VERIFIER_MODEL)
    weights = stored.path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    artifact_refusals = refused("artifact")
    await registry.publish(VersionRecord(name="verifier", version=3, uri=stored.uri, sha256=stored.sha256))
    await wait_for(lambda: refused("artifact") == artifact_refusals + 1)

    # v4: a record whose sha256 matches nothing stored.
    await registry.publish(VersionRecord(name="verifier", version=4, uri=stored.uri, sha256="0" * 64))
    await wait_for(lambda: refused("artifact") == artifact_refusals + 2)

    # v5: verifies byte for byte, but is no checkpoint at all.
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "README.md").write_text("no weights here\n")
    load_refusals = refused("load")
    await publish_checkpoint(registry, store, "verifier", not_a_model)
    await wait_for(lambda: refused("load") == load_refusals + 1)

    assert verifier.app.model is v2
    assert await served_version(verifier) == 2
    response = await verifier.stub.Score(verifier_pb2.ScoreRequest(items=ITEMS), timeout=5)
    assert response.model.version == 2
    assert sample("legibility_model_swaps_total") == swaps
    assert sample("legibility_model_version") == 2

    # The watcher goes on: a good v6 is swapped in.
    await publish_checkpoint(registry, store, "verifier", VERIFIER_MODEL)
    await wait_for(lambda: verifier.app.model.weights.version == 6)
    assert await served_version(verifier) == 6


async def test_redis_outage_keeps_serving_and_the_watch_resumes(watching, redis_server, store) -> None:
    verifier = watching
    # The fixture's redis_client is not used after the restart; a fresh client publishes.
    redis_server.stop()
    await asyncio.sleep(1.0)  # two reconcile intervals with Redis gone: the watcher backs off
    response = await verifier.stub.Score(verifier_pb2.ScoreRequest(items=ITEMS), timeout=5)
    assert response.model.version == 1
    redis_server.start()  # same port, its data lost (no persistence): the record is published again, as v2
    client = connect(redis_server.url)
    try:
        await publish_checkpoint(VersionRegistry(client), store, "verifier", VERIFIER_MODEL, version=2)
    finally:
        await client.aclose()
    await wait_for(lambda: verifier.app.model.weights.version == 2)
    assert await served_version(verifier) == 2
