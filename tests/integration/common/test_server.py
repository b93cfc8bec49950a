"""GrpcServer on loopback: health, reflection, error mapping, limits, admission, graceful shutdown, metrics."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.common.client import open_channel
from services.common.genproto.legibility.v1 import verifier_pb2, verifier_pb2_grpc
from tests.support.length_scorer import SERVICE_NAME

REPO_ROOT = Path(__file__).resolve().parents[3]


def score_request(*solutions: str, problem: str = "2+2?") -> verifier_pb2.ScoreRequest:
    return verifier_pb2.ScoreRequest(items=[verifier_pb2.ScoreItem(problem=problem, solution=s) for s in solutions])


async def health_status(channel: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)).status


async def test_health_follows_readiness_and_lists_services(start_scorer) -> None:
    running = await start_scorer()
    assert await health_status(running.channel) == health_pb2.HealthCheckResponse.SERVING
    assert await health_status(running.channel, SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING
    await running.server.set_serving(False)  # e.g. the model is being (re)loaded
    assert await health_status(running.channel, SERVICE_NAME) == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_lists_the_service_and_health(start_scorer) -> None:
    running = await start_scorer()
    stub = reflection_pb2_grpc.ServerReflectionStub(running.channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {service.name async for r in responses for service in r.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


async def test_bad_field_is_invalid_argument_naming_it_and_server_keeps_serving(start_scorer) -> None:
    running = await start_scorer()
    request = verifier_pb2.ScoreRequest(
        items=[
            verifier_pb2.ScoreItem(problem="p", solution="a"),
            verifier_pb2.ScoreItem(problem="", solution="b"),
        ]
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.stub.Score(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "items[1].problem" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.stub.Score(verifier_pb2.ScoreRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("items:")
    response = await running.stub.Score(score_request("12345"), timeout=5)
    assert response.results[0].score == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x0a\x04\x0a\x02\xff\xfe", "DecodeError"),  # items[0].problem = bytes that are not UTF-8
        (b"\x0a\x09\x0a\x02ab", "DecodeError"),  # truncated: items says 9 bytes follow, 4 do
    ],
)
async def test_undecodable_request_is_invalid_argument_not_internal(start_scorer, raw: bytes, reason: str) -> None:
    running = await start_scorer()
    raw_score = running.channel.unary_unary(
        "/legibility.v1.VerifierService/Score",
        request_serializer=None,  # bytes as they are on the wire
        response_deserializer=verifier_pb2.ScoreResponse.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await raw_score(raw, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(f"request: cannot be decoded ({reason}")
    response = await running.stub.Score(score_request("12345"), timeout=5)
    assert response.results[0].score == pytest.approx(0.5)


async def test_oversize_message_is_resource_exhausted_and_server_keeps_serving(start_scorer) -> None:
    running = await start_scorer(max_message_bytes=64 * 1024)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.stub.Score(score_request("x" * 100_000), timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    response = await running.stub.Score(score_request("x" * 1000), timeout=5)
    assert response.results[0].score == pytest.approx(100.0)


async def test_unexpected_error_is_internal_with_logged_traceback(start_scorer, caplog) -> None:
    running = await start_scorer()
    with caplog.at_level(logging.ERROR), pytest.raises(grpc.aio.AioRpcError) as info:
        await running.stub.Score(score_request("raise"), timeout=5)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    error_id = info.value.details().split("error id ")[1].split(";")[0]
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert "the length model broke" in str(logged[0].exc_info[1])
    assert (await running.stub.Score(score_request("ok"), timeout=5)).results[0].score == pytest.approx(0.2)


async def test_saturated_admission_refuses_at_once_while_health_answers(start_scorer) -> None:
    running = await start_scorer(delay_s=2.0, admission_limit=2, channel={"retry": None})
    slow = [asyncio.ensure_future(running.stub.Score(score_request("ab"), timeout=10)) for _ in range(2)]
    while running.scorer.gate.inside < 2:
        await asyncio.sleep(0.01)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.stub.Score(score_request("c"), timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await health_status(running.channel, SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING
    assert not any(call.done() for call in slow)  # refused and answered inside the 2 s calls: nothing waited for them
    results = await asyncio.gather(*slow)
    assert [r.results[0].score for r in results] == pytest.approx([0.2, 0.2])


async def test_graceful_shutdown_reports_not_serving_and_drains_in_flight(start_scorer) -> None:
    running = await start_scorer(delay_s=1.5, drain_delay_s=0.5, grace_period_s=5.0)
    assert await health_status(running.channel) == health_pb2.HealthCheckResponse.SERVING
    in_flight = asyncio.ensure_future(running.stub.Score(score_request("drain me"), timeout=10))
    while running.scorer.gate.inside < 1:
        await asyncio.sleep(0.01)
    stopping = asyncio.create_task(running.server.stop())
    await asyncio.sleep(0.1)
    assert await health_status(running.channel) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert not in_flight.done()
    response = await in_flight
    assert response.results[0].score == pytest.approx(0.8)
    await stopping
    assert running.scorer.completed == 1


async def test_metrics_count_calls_by_status_code(start_scorer) -> None:
    running = await start_scorer()
    await running.stub.Score(score_request("a"), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError):
        await running.stub.Score(verifier_pb2.ScoreRequest(), timeout=5)
    url = f"http://127.0.0.1:{running.server.metrics_port}/metrics"
    body = (await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())).decode()

    def value(code: str) -> float:
        prefix = f'legibility_grpc_requests_total{{code="{code}",method="Score",service="length_scorer"}} '
        lines = [line for line in body.splitlines() if line.startswith(prefix)]
        return float(lines[0].removeprefix(prefix)) if lines else 0.0

    assert value("OK") >= 1 and value("INVALID_ARGUMENT") >= 1
    assert 'legibility_grpc_request_duration_seconds_count{method="Score",service="length_scorer"}' in body


@pytest.mark.slow
async def test_sigterm_drains_in_flight_call_in_a_real_process(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "LEGIBILITY_METRICS_ENABLED": "false"}
    args = [sys.executable, "-m", "tests.support.length_scorer_server", "2.0"]
    args += ["--port", "0", "--drain-delay-s", "0.5", "--grace-period-s", "5"]
    server_log = (tmp_path / "server.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        *args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=server_log
    )
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
        assert line.startswith("READY "), (tmp_path / "server.log").read_text()
        port = int(line.split()[1])
        async with open_channel(f"127.0.0.1:{port}") as channel:
            stub = verifier_pb2_grpc.VerifierServiceStub(channel)
            in_flight = asyncio.ensure_future(stub.Score(score_request("sigterm"), timeout=10))
            await asyncio.sleep(0.5)  # the call is now sleeping inside the server
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.2)
            assert await health_status(channel) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert (await in_flight).results[0].score == pytest.approx(0.7)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
        assert "length_scorer stopped" in (tmp_path / "server.log").read_text()
    finally:
        server_log.close()
        if process.returncode is None:
            process.kill()
            await process.wait()
