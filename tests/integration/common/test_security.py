"""Security one setting away: bearer token (UNAUTHENTICATED without it; health exempt), TLS and mTLS."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.common.client import open_channel
from services.common.genproto.legibility.v1 import verifier_pb2, verifier_pb2_grpc
from tests.support.certs import make_certs

TOKEN = "s3cret-token-value"
REQUEST = verifier_pb2.ScoreRequest(items=[verifier_pb2.ScoreItem(problem="p", solution="abc")])


async def status_of(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_token_required_on_every_rpc_except_health(start_scorer, caplog) -> None:
    running = await start_scorer(auth_token=TOKEN)
    port = running.server.port
    caplog.set_level(logging.DEBUG)
    # running.channel carries no token.
    assert await status_of(running.stub.Score(REQUEST, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
    async with open_channel(f"127.0.0.1:{port}", token="wrong-token") as wrong:
        stub = verifier_pb2_grpc.VerifierServiceStub(wrong)
        assert await status_of(stub.Score(REQUEST, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
    # Streaming RPCs (reflection is stream-stream) are guarded too.
    reflection = reflection_pb2_grpc.ServerReflectionStub(running.channel)
    stream = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        _ = [r async for r in stream]
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    health = health_pb2_grpc.HealthStub(running.channel)
    response = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    async with open_channel(f"127.0.0.1:{port}", token=TOKEN) as good:
        response = await verifier_pb2_grpc.VerifierServiceStub(good).Score(REQUEST, timeout=5)
        assert response.results[0].score == pytest.approx(0.3)
    assert all(
        TOKEN not in record.getMessage() and "wrong-token" not in record.getMessage() for record in caplog.records
    )
    # Each refusal is logged by the interceptor, naming the method: the two unary calls exactly once each; the
    # reflection stream at least once (gRPC may transparently retry a stream refused before it started).
    refused = [r.getMessage() for r in caplog.records if "bearer token" in r.getMessage()]
    assert sum("VerifierService/Score" in m for m in refused) == 2
    assert any("ServerReflectionInfo" in m for m in refused)


async def test_token_from_file(start_scorer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")  # Secrets mounted as files often end with a newline
    running = await start_scorer(auth_token_file=token_file, channel={"token": TOKEN})
    assert (await running.stub.Score(REQUEST, timeout=5)).results[0].score == pytest.approx(0.3)


async def test_tls_server_rejects_plaintext_and_serves_tls(start_scorer, tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    running = await start_scorer(
        tls_cert_file=certs.server_cert, tls_key_file=certs.server_key, channel={"tls_ca_file": certs.ca}
    )
    assert (await running.stub.Score(REQUEST, timeout=5)).results[0].score == pytest.approx(0.3)
    async with open_channel(f"127.0.0.1:{running.server.port}") as plaintext:
        stub = verifier_pb2_grpc.VerifierServiceStub(plaintext)
        assert await status_of(stub.Score(REQUEST, timeout=3)) == grpc.StatusCode.UNAVAILABLE


async def test_mtls_requires_a_client_certificate(start_scorer, tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    client = {"tls_ca_file": certs.ca, "tls_cert_file": certs.client_cert, "tls_key_file": certs.client_key}
    running = await start_scorer(
        tls_cert_file=certs.server_cert,
        tls_key_file=certs.server_key,
        tls_client_ca_file=certs.ca,
        channel=client,
    )
    assert (await running.stub.Score(REQUEST, timeout=5)).results[0].score == pytest.approx(0.3)
    async with open_channel(f"localhost:{running.server.port}", tls_ca_file=certs.ca) as no_client_cert:
        stub = verifier_pb2_grpc.VerifierServiceStub(no_client_cert)
        assert await status_of(stub.Score(REQUEST, timeout=3)) == grpc.StatusCode.UNAVAILABLE
