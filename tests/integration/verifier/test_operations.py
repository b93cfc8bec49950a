"""Serving concerns: overload, health, micro-batching metrics, weight verification, the CLI process."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.artifacts import ArtifactStore, directory_sha256
from services.common.client import open_channel
from services.common.cpu_cores import available_cores
from services.common.errors import ArtifactError
from services.common.genproto.legibility.v1 import verifier_pb2, verifier_pb2_grpc
from services.common.ports import free_port
from services.common.publish import publish_checkpoint
from services.common.registry import VersionRegistry
from services.common.weights import verified_weights
from services.verifier import app as app_module
from services.verifier.service import SERVICE_NAME
from services.verifier.settings import VerifierSettings
from tests.integration.verifier.conftest import VERIFIER_MODEL, model_held
from tests.support.cli_server import cli_server
from tests.support.prometheus import metric, scrape

PROBLEM = "Ann has 4 bags of 7 pens. She gets 3 more. How many pens now?"
SOLUTION = "4*7=28.\n28+3=31.\n#### 31"
SERVING = health_pb2.HealthCheckResponse.SERVING


def request(count: int) -> verifier_pb2.ScoreRequest:
    return verifier_pb2.ScoreRequest(items=[verifier_pb2.ScoreItem(problem=PROBLEM, solution=SOLUTION)] * count)


def steps_request(count: int) -> verifier_pb2.ScoreStepsRequest:
    item = verifier_pb2.ScoreStepsItem(problem=PROBLEM, solution=SOLUTION)
    return verifier_pb2.ScoreStepsRequest(items=[item] * count)


async def health(verifier, service: str = SERVICE_NAME) -> int:
    return (await verifier.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)).status


async def test_overload_is_resource_exhausted_at_once_while_health_answers(start_server) -> None:
    verifier = await start_server(max_batch_size=64, max_delay_ms=60_000, max_queue_size=4)
    model = verifier.app.model
    with model_held(model) as hold:
        # The first call's batch holds the model; the next ones gather in the queue while it is busy.
        first = asyncio.ensure_future(verifier.stub.Score(request(1), timeout=30))
        await hold.busy.wait()
        admitted = asyncio.ensure_future(verifier.stub.ScoreSteps(steps_request(1), timeout=30))  # 3 prefixes
        admitted_too = asyncio.ensure_future(verifier.stub.Score(request(1), timeout=30))
        while model.queue_depth < 4:
            await asyncio.sleep(0.01)
        overflows = [(verifier.raw_stub.Score, request(1)), (verifier.raw_stub.ScoreSteps, steps_request(1))]
        for call, overflow in overflows:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(overflow, timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_queue_size 4" in info.value.details()
        assert await health(verifier) == SERVING
        assert await health(verifier, "") == SERVING
        assert not admitted.done()  # refused and answered while the queue was still full: nothing waited
        hold.go.set()  # the model is free: the gathered calls run at once, not after the 60-s delay
        steps, score, _ = await asyncio.gather(admitted, admitted_too, first)
    assert steps.results[0].steps[-1].score == pytest.approx(score.results[0].score, abs=1e-4)
    assert len((await verifier.stub.Score(request(4), timeout=10)).results) == 4  # room again


async def test_health_answers_while_the_model_computes(start_server) -> None:
    verifier = await start_server(max_batch_size=1024, max_queue_size=4096)
    heavy = asyncio.ensure_future(verifier.stub.Score(request(4096), timeout=60))
    await asyncio.sleep(0.05)
    answered_meanwhile = 0
    while not heavy.done():
        assert await health(verifier, "") == SERVING
        answered_meanwhile += not heavy.done()
        await asyncio.sleep(0.02)
    assert len((await heavy).results) == 4096
    assert answered_meanwhile >= 2  # a forward pass on the event loop would let no answer in before it ended


async def test_health_is_not_serving_and_calls_unavailable_until_the_weights_are_loaded(monkeypatch) -> None:
    release = asyncio.Event()

    async def slow_weights(settings):
        await release.wait()
        return await verified_weights(settings)

    monkeypatch.setattr(app_module, "verified_weights", slow_weights)
    port = free_port()  # known before start returns
    settings = VerifierSettings(port=port, metrics_enabled=False, drain_delay_s=0.0, model_path=VERIFIER_MODEL)
    starting = asyncio.ensure_future(app_module.start_verifier(settings))
    channel = open_channel(f"127.0.0.1:{port}")
    stub = verifier_pb2_grpc.VerifierServiceStub(channel)
    try:
        check = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        status = await health_pb2_grpc.HealthStub(channel).Check(check, timeout=10, wait_for_ready=True)
        assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Score(request(1), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "still loading" in info.value.details()
        release.set()
        app = await starting
        try:
            assert (await health_pb2_grpc.HealthStub(channel).Check(check, timeout=5)).status == SERVING
            assert len((await stub.Score(request(1), timeout=10)).results) == 1
        finally:
            await app.stop()
    finally:
        release.set()
        await channel.close()


async def test_concurrent_calls_are_micro_batched_and_counted(start_server) -> None:
    verifier = await start_server(max_batch_size=64, max_delay_ms=200)
    before = scrape(verifier.app.server.metrics_port)
    calls = [verifier.stub.Score(request(1), timeout=10) for _ in range(8)]
    calls += [verifier.stub.ScoreSteps(steps_request(2), timeout=10) for _ in range(4)]
    results = await asyncio.gather(*calls)
    after = scrape(verifier.app.server.metrics_port)
    # The first call may run alone (an idle model takes a batch at once) and the rest together: the same pair
    # scores the same in any batch, up to float rounding across batch shapes (6e-8 seen).
    scores = [r.results[0].score for r in results[:8]]
    assert max(scores) - min(scores) < 1e-5

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    batcher = {"batcher": "verifier.score"}
    assert delta("legibility_batch_size_sum", **batcher) == 8 + 4 * 2 * 3  # pairs: 8 solutions + 24 prefixes
    calls_made = delta("legibility_batch_size_count", **batcher)
    assert 1 <= calls_made <= 3  # 12 concurrent requests merged into at most 3 forward passes
    assert delta("legibility_batch_size_sum", **batcher) / calls_made >= 32 / 3
    assert delta("legibility_verifier_items_total", rpc="Score") == 8
    assert delta("legibility_verifier_items_total", rpc="ScoreSteps") == 8
    assert delta("legibility_verifier_step_prefixes_total") == 24
    ok = {"service": "verifier", "method": "Score", "code": "OK"}
    assert delta("legibility_grpc_requests_total", **ok) == 8
    assert metric(after, "legibility_model_version", model="verifier") == 0


async def test_expected_sha256_must_match_or_the_service_refuses_to_start(start_server) -> None:
    sha256 = directory_sha256(VERIFIER_MODEL)
    with pytest.raises(ArtifactError, match="expected_sha256"):
        await start_server(expected_sha256="0" * 64)
    verifier = await start_server(expected_sha256=sha256.upper())
    info = (await verifier.stub.GetModelInfo(verifier_pb2.VerifierServiceGetModelInfoRequest(), timeout=5)).model
    assert info.sha256 == sha256


async def test_weights_load_from_a_registry_version_verified_against_the_store(
    start_server, redis_server, redis_client, tmp_path: Path
) -> None:
    store = ArtifactStore(tmp_path / "store")
    record = await publish_checkpoint(VersionRegistry(redis_client), store, "verifier", VERIFIER_MODEL)
    await publish_checkpoint(VersionRegistry(redis_client), store, "verifier", VERIFIER_MODEL)  # v2 is current
    common = {"redis_url": redis_server.url, "artifact_root": store.root}
    verifier = await start_server(registry_version=0, **common)
    info = (await verifier.stub.GetModelInfo(verifier_pb2.VerifierServiceGetModelInfoRequest(), timeout=5)).model
    assert (info.version, info.uri, info.sha256) == (2, "artifact://verifier/v000002", directory_sha256(VERIFIER_MODEL))
    assert (await verifier.stub.Score(verifier_pb2.ScoreRequest(items=request(1).items, min_version=2))).model == info
    with pytest.raises(ArtifactError, match="holds version 2"):
        await start_server(registry_version=1, **common)  # older than current and no hash to pin it
    (store.resolve(record.uri) / "config.json").write_text("{}")  # tampered after publishing
    with pytest.raises(ArtifactError, match=r"config\.json"):
        await start_server(registry_version=1, expected_sha256=record.sha256, **common)


@pytest.mark.slow
async def test_cli_serves_until_sigterm() -> None:
    env = {**os.environ, "LEGIBILITY_MODEL_PATH": str(VERIFIER_MODEL)}
    core = min(available_cores())
    async with cli_server("verifier", "--http-port", "0", "--cpu-cores", str(core), env=env) as server:
        assert re.search(r"\(sha256 [0-9a-f]{64}\) serving", server.announcement)
        assert os.sched_getaffinity(server.process.pid) == {core}
        channel = open_channel(server.target)
        stub = verifier_pb2_grpc.VerifierServiceStub(channel)
        response = await stub.Score(request(2), timeout=10)
        assert len(response.results) == 2 and response.model.sha256 == directory_sha256(VERIFIER_MODEL)
        await channel.close()
        assert await server.terminate() == 0
