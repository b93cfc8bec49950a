"""``POST /get_reward`` has the gRPC server's security and never answers 500: the bearer token (checked before the
body is read), TLS and mTLS from the same settings, deeply nested JSON refused as 400, Retry-After on 429 / 503."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from services.common.errors import NotReady
from services.verifier.http_reward import RewardHttpServer
from tests.integration.verifier.conftest import RunningVerifier, VerifierFactory
from tests.integration.verifier.test_http_reward import PAIRS, openrlhf_body
from tests.support.certs import make_certs

TOKEN = "s3cret-token"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client:
        yield client


async def post(session: aiohttp.ClientSession, url: str, body: Any, **kwargs: Any) -> tuple[int, Any, Any]:
    data = {"data": body} if isinstance(body, (str, bytes)) else {"json": body}
    async with session.post(url, **data, **kwargs) as response:
        return response.status, await response.json(), response.headers


async def test_the_bearer_token_guards_get_reward_as_it_guards_grpc(
    start_server: VerifierFactory, session: aiohttp.ClientSession
) -> None:
    verifier: RunningVerifier = await start_server(http_port=0, auth_token=TOKEN)
    url = f"http://127.0.0.1:{verifier.app.http_port}/get_reward"
    body = openrlhf_body(PAIRS[:2])
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        status, reply, reply_headers = await post(session, url, body, headers=headers)
        assert status == 401 and reply == {"error": "missing or invalid bearer token"}
        assert reply_headers["WWW-Authenticate"] == "Bearer"
    # Refused before the body is read: a large unauthenticated post costs nothing.
    status, _, _ = await post(session, url, b"x" * 900_000, headers={"Content-Type": "application/json"})
    assert status == 401
    status, reply, _ = await post(session, url, body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and len(reply["rewards"]) == 2


async def test_tls_and_mtls_come_from_the_servers_settings(
    start_server: VerifierFactory, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    certs = make_certs(tmp_path)
    verifier = await start_server(
        http_port=0,
        tls_cert_file=certs.server_cert,
        tls_key_file=certs.server_key,
        tls_client_ca_file=certs.ca,
    )
    url = f"https://127.0.0.1:{verifier.app.http_port}/get_reward"
    client = ssl.create_default_context(cafile=certs.ca)
    client.load_cert_chain(certs.client_cert, certs.client_key)
    status, reply, _ = await post(session, url, openrlhf_body(PAIRS[:2]), ssl=client)
    assert status == 200 and len(reply["rewards"]) == 2
    no_client_cert = ssl.create_default_context(cafile=certs.ca)
    with pytest.raises(aiohttp.ClientError):
        await post(session, url, openrlhf_body(PAIRS[:2]), ssl=no_client_cert)
    with pytest.raises(aiohttp.ClientError):  # plain HTTP to the TLS port
        await post(session, url.replace("https://", "http://"), openrlhf_body(PAIRS[:2]))


async def test_deeply_nested_json_is_400_and_the_route_keeps_serving(
    start_server: VerifierFactory, session: aiohttp.ClientSession
) -> None:
    verifier = await start_server(http_port=0)
    url = f"http://127.0.0.1:{verifier.app.http_port}/get_reward"
    nested = '{"query": ' + "[" * 100_000 + "]" * 100_000 + "}"
    status, reply, _ = await post(session, url, nested, headers={"Content-Type": "application/json"})
    assert status == 400 and reply == {"error": "body: JSON nested too deeply"}
    status, reply, _ = await post(session, url, "{not json", headers={"Content-Type": "application/json"})
    assert status == 400 and reply["error"].startswith("body: malformed JSON")
    status, reply, _ = await post(session, url, openrlhf_body(PAIRS[:1]))
    assert status == 200


async def test_a_model_still_loading_is_503_with_retry_after(session: aiohttp.ClientSession) -> None:
    def loading() -> Any:
        raise NotReady("the verifier is still loading")

    server = RewardHttpServer(loading, "127.0.0.1", 0, max_items=8)
    await server.start()
    try:
        status, reply, headers = await post(
            session, f"http://127.0.0.1:{server.port}/get_reward", openrlhf_body(PAIRS[:1])
        )
    finally:
        await server.stop()
    assert status == 503 and reply == {"error": "the verifier is still loading"}
    assert headers["Retry-After"] == "1"


async def test_http_calls_count_in_the_same_metrics_as_grpc_under_grpc_code_names(
    start_server: VerifierFactory, session: aiohttp.ClientSession
) -> None:
    from services.common.metrics import GRPC_REQUESTS

    def count(code: str) -> float:
        return GRPC_REQUESTS.labels("verifier", "GetReward", code)._value.get()

    verifier = await start_server(http_port=0)
    url = f"http://127.0.0.1:{verifier.app.http_port}/get_reward"
    before = {code: count(code) for code in ("OK", "INVALID_ARGUMENT")}
    assert (await post(session, url, openrlhf_body(PAIRS[:2])))[0] == 200
    assert (await post(session, url, {"query": []}))[0] == 400
    assert (await post(session, url, {"query": []}))[0] == 400
    assert count("OK") == before["OK"] + 1
    assert count("INVALID_ARGUMENT") == before["INVALID_ARGUMENT"] + 2
