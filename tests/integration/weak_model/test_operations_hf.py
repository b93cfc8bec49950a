"""Serving concerns: overload, health, micro-batching metrics, frozen-weight verification, the CLI process."""

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
from services.common.genproto.legibility.v1 import common_pb2, weak_model_pb2, weak_model_pb2_grpc
from services.common.ports import free_port
from services.common.publish import publish_checkpoint
from services.common.registry import VersionRegistry
from services.common.weights import verified_weights
from services.weak_model import app as app_module
from services.weak_model.service import SERVICE_NAME
from services.weak_model.settings import WeakModelSettings
from tests.integration.weak_model.conftest import WEAK_MODEL
from tests.support.cli_server import cli_server
from tests.support.prometheus import metric, scrape

PROMPT = "Ann has 4 bags of 7 pens. She gets 3 more. How many pens now?\n"
SERVING = health_pb2.HealthCheckResponse.SERVING


def request(count: int, max_new_tokens: int = 8) -> weak_model_pb2.ContinueRequest:
    item = weak_model_pb2.ContinueItem(prefix=common_pb2.TextOrTokens(text=PROMPT), max_new_tokens=max_new_tokens)
    return weak_model_pb2.ContinueRequest(items=[item] * count)


async def health(weak, service: str = SERVICE_NAME) -> int:
    return (await weak.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)).status


async def test_overload_is_resource_exhausted_at_once_while_health_answers(start_server) -> None:
    # A long batching delay holds admitted items in the queue, so "full" is a state, not a race.
    weak = await start_server(max_batch_size=64, max_delay_ms=1000, max_queue_size=4)
    admitted = asyncio.ensure_future(weak.stub.Continue(request(3), timeout=10))
    admitted_too = asyncio.ensure_future(weak.stub.Continue(request(1), timeout=10))
    while weak.app.engine.queue_depth < 4:
        await asyncio.sleep(0.01)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await weak.raw_stub.Continue(request(1), timeout=10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_queue_size 4" in info.value.details()
    assert await health(weak) == SERVING
    assert not admitted.done()  # refused and answered while the queue still held its 1,000 ms batch: nothing waited
    first, second = await asyncio.gather(admitted, admitted_too)
    assert [len(r.token_ids) for r in [*first.results, *second.results]] == [8, 8, 8, 8]
    assert len((await weak.stub.Continue(request(4), timeout=10)).results) == 4  # room again


async def test_a_short_continuation_does_not_wait_for_a_long_one(start_server) -> None:
    """Continuous batching: a 2-token request that arrives while a long call decodes joins the running batch and
    returns while the long one is still decoding (a micro-batch would have waited for all of it)."""
    weak = await start_server(max_batch_size=8, max_delay_ms=0)
    long_items = [  # seeded at T 2: these run 39-51 tokens before EOS
        weak_model_pb2.ContinueItem(
            prefix=common_pb2.TextOrTokens(text=PROMPT), max_new_tokens=150, temperature=2.0, seed=seed
        )
        for seed in (11, 19, 16, 26)
    ]
    long_call = asyncio.ensure_future(weak.stub.Continue(weak_model_pb2.ContinueRequest(items=long_items)))
    decoder = weak.app.engine._continue
    while not decoder.decoding:
        await asyncio.sleep(0.005)
    short = await weak.stub.Continue(request(1, max_new_tokens=2), timeout=30)
    assert len(short.results[0].token_ids) == 2
    assert not long_call.done()
    long_reply = await long_call
    assert max(len(r.token_ids) for r in long_reply.results) > 40  # long enough that waiting for it would show


async def test_health_answers_while_the_model_computes(start_server) -> None:
    weak = await start_server(max_batch_size=32)
    item = weak_model_pb2.ContinueItem(
        prefix=common_pb2.TextOrTokens(text=PROMPT), max_new_tokens=150, temperature=3.0, seed=1
    )
    heavy = asyncio.ensure_future(weak.stub.Continue(weak_model_pb2.ContinueRequest(items=[item] * 32), timeout=60))
    await asyncio.sleep(0.05)
    answered_meanwhile = 0
    while not heavy.done():
        assert await health(weak, "") == SERVING
        answered_meanwhile += not heavy.done()
        await asyncio.sleep(0.02)
    assert len((await heavy).results) == 32
    assert answered_meanwhile >= 2  # decoding on the event loop would let no answer in before it ended


async def test_health_is_not_serving_and_calls_unavailable_until_the_weights_are_loaded(monkeypatch) -> None:
    release = asyncio.Event()

    async def slow_weights(settings):
        await release.wait()
        return await verified_weights(settings)

    monkeypatch.setattr(app_module, "verified_weights", slow_weights)
    port = free_port()  # known before start returns
    settings = WeakModelSettings(port=port, metrics_enabled=False, drain_delay_s=0.0, model_path=WEAK_MODEL)
    starting = asyncio.ensure_future(app_module.start_weak_model(settings))
    channel = open_channel(f"127.0.0.1:{port}")
    stub = weak_model_pb2_grpc.WeakModelServiceStub(channel)
    try:
        check = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
        status = await health_pb2_grpc.HealthStub(channel).Check(check, timeout=10, wait_for_ready=True)
        assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Continue(request(1), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "still loading" in info.value.details()
        release.set()
        app = await starting
        try:
            assert (await health_pb2_grpc.HealthStub(channel).Check(check, timeout=5)).status == SERVING
            assert len((await stub.Continue(request(1), timeout=10)).results) == 1
        finally:
            await app.stop()
    finally:
        release.set()
        await channel.close()


async def test_concurrent_calls_are_micro_batched_and_counted(start_server) -> None:
    weak = await start_server(max_batch_size=16, max_delay_ms=200)
    before = scrape(weak.app.server.metrics_port)
    results = await asyncio.gather(*(weak.stub.Continue(request(1, 5), timeout=10) for _ in range(6)))
    after = scrape(weak.app.server.metrics_port)
    assert [len(r.results[0].token_ids) for r in results] == [5] * 6

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    batcher = {"batcher": "weak_model.continue"}
    assert delta("legibility_batch_size_sum", **batcher) == 6
    assert delta("legibility_batch_size_count", **batcher) < 6  # merged: fewer model calls than requests
    assert delta("legibility_weak_model_generated_tokens_total") == 30
    assert delta("legibility_weak_model_items_total", rpc="Continue") == 6
    assert delta("legibility_weak_model_finishes_total", reason="length") == 6
    ok = {"service": "weak_model", "method": "Continue", "code": "OK"}
    assert delta("legibility_grpc_requests_total", **ok) == 6
    assert delta("legibility_grpc_request_duration_seconds_count", service="weak_model", method="Continue") == 6
    assert metric(after, "legibility_model_version", model="weak") == 0


async def test_expected_sha256_must_match_or_the_service_refuses_to_start(start_server) -> None:
    sha256 = directory_sha256(WEAK_MODEL)
    with pytest.raises(ArtifactError, match="expected_sha256"):
        await start_server(expected_sha256="0" * 64)
    weak = await start_server(expected_sha256=sha256.upper())
    info = (await weak.stub.GetModelInfo(weak_model_pb2.WeakModelServiceGetModelInfoRequest(), timeout=5)).model
    assert info.sha256 == sha256


async def test_weights_load_from_a_registry_version_verified_against_the_store(
    start_server, redis_server, redis_client, tmp_path: Path
) -> None:
    store = ArtifactStore(tmp_path / "store")
    record = await publish_checkpoint(VersionRegistry(redis_client), store, "weak", WEAK_MODEL)
    await publish_checkpoint(VersionRegistry(redis_client), store, "weak", WEAK_MODEL)  # version 2 is current
    common = {"redis_url": redis_server.url, "artifact_root": store.root}
    weak = await start_server(registry_version=0, **common)
    info = (await weak.stub.GetModelInfo(weak_model_pb2.WeakModelServiceGetModelInfoRequest(), timeout=5)).model
    assert (info.version, info.uri, info.sha256) == (2, "artifact://weak/v000002", directory_sha256(WEAK_MODEL))
    with pytest.raises(ArtifactError, match="holds version 2"):
        await start_server(registry_version=1, **common)  # older than current and no hash to pin it
    old = await start_server(registry_version=1, expected_sha256=record.sha256, **common)
    assert (await old.stub.Continue(request(1, 3), timeout=10)).model.version == 1
    (store.resolve(record.uri) / "config.json").write_text("{}")  # tampered after publishing
    with pytest.raises(ArtifactError, match=r"config\.json"):
        await start_server(registry_version=1, expected_sha256=record.sha256, **common)


@pytest.mark.slow
async def test_cli_serves_until_sigterm() -> None:
    env = {**os.environ, "LEGIBILITY_MODEL_PATH": str(WEAK_MODEL)}
    core = max(available_cores())
    async with cli_server("weak-model", "--cpu-cores", str(core), env=env) as server:
        assert re.search(r"\(sha256 [0-9a-f]{64}\) serving", server.announcement)
        assert os.sched_getaffinity(server.process.pid) == {core}
        channel = open_channel(server.target)
        stub = weak_model_pb2_grpc.WeakModelServiceStub(channel)
        response = await stub.Continue(request(2, 4), timeout=10)
        assert [len(r.token_ids) for r in response.results] == [4, 4]
        await channel.close()
        assert await server.terminate() == 0
