"""Our clients' service config against real servers on loopback: round_robin spreads one channel's calls over
every replica, and a replica's RESOURCE_EXHAUSTED is retried instead of failing the caller."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from services.common.client import RETRIED_METHODS, open_channel, service_config
from services.common.genproto.legibility.v1 import verifier_pb2_grpc
from tests.integration.common.test_server import score_request


def test_the_service_config_retries_only_idempotent_services_and_balances_round_robin() -> None:
    config = json.loads(json.dumps(service_config()))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method,) = config["methodConfig"]
    assert [(n["service"], n["method"]) for n in method["name"]] == list(RETRIED_METHODS)
    assert {n["method"] for n in method["name"]} == {"Score", "ScoreSteps", "Continue", "LogProbs"}
    # Not StartRun (not idempotent), not GetModelInfo (a quick probe).
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]
    assert method["retryPolicy"]["maxAttempts"] == 5
    assert "methodConfig" not in service_config(None)


async def test_one_channel_spreads_its_calls_over_both_replicas(start_scorer) -> None:
    first, second = await start_scorer(), await start_scorer()
    channel = open_channel(f"ipv4:127.0.0.1:{first.server.port},127.0.0.1:{second.server.port}")
    try:
        stub = verifier_pb2_grpc.VerifierServiceStub(channel)
        for _ in range(40):
            await stub.Score(score_request("abc"), timeout=5)
    finally:
        await channel.close()
    calls = [first.scorer.completed, second.scorer.completed]
    assert sum(calls) == 40 and min(calls) >= 10, calls  # round_robin: 20 / 20 (pick_first would give 40 / 0)


@pytest.mark.parametrize("retry", [True, False])
async def test_a_full_replica_is_retried_not_failed(start_scorer, retry: bool) -> None:
    running = await start_scorer(delay_s=0.05, admission_limit=4)
    channel = open_channel(f"127.0.0.1:{running.server.port}", **({} if retry else {"retry": None}))
    try:
        stub = verifier_pb2_grpc.VerifierServiceStub(channel)
        calls = [stub.Score(score_request("ab"), timeout=10) for _ in range(8)]  # twice the admission limit
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        await channel.close()
    failed = [o.code() for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    if retry:
        assert failed == [] and running.scorer.completed == 8
    else:
        assert failed and set(failed) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
