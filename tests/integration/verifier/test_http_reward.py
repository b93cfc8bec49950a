"""The OpenRLHF remote reward model endpoint (``POST /get_reward``) on the real verifier: JSON shape, rewards equal
to gRPC Score, role prefixes, bad input (400 naming the field, then still serving), and the version in extra_logs."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from services.common.genproto.legibility.v1 import verifier_pb2
from services.tasks.styles import render
from services.tasks.toy import format_prompt, generate
from tests.integration.verifier.conftest import RunningVerifier, VerifierFactory, model_held

PROBLEMS = generate("test", 6, seed=1)
PAIRS = [(p.question, render(p, "plain")) for p in PROBLEMS]


@pytest.fixture
async def http_verifier(start_server: VerifierFactory) -> RunningVerifier:
    return await start_server(http_port=0)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as client:
        yield client


def url(verifier: RunningVerifier) -> str:
    assert verifier.app.http_port
    return f"http://127.0.0.1:{verifier.app.http_port}/get_reward"


async def post(session: aiohttp.ClientSession, verifier: RunningVerifier, body: Any) -> tuple[int, Any]:
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, (str, bytes)) else {"json": body}
    async with session.post(url(verifier), **kwargs) as response:
        return response.status, await response.json()


def openrlhf_body(pairs: list[tuple[str, str]], role: str = "") -> dict[str, Any]:
    prompts = [format_prompt(q, role) for q, _ in pairs]
    return {
        "query": [p + s + "<|endoftext|>" for p, (_, s) in zip(prompts, pairs, strict=True)],
        "prompts": prompts,
        "labels": [""] * len(pairs),
    }


async def grpc_scores(verifier: RunningVerifier, pairs: list[tuple[str, str]]) -> list[float]:
    items = [verifier_pb2.ScoreItem(problem=q, solution=s) for q, s in pairs]
    response = await verifier.stub.Score(verifier_pb2.ScoreRequest(items=items), timeout=30)
    return [r.score for r in response.results]


async def test_json_shape_and_rewards_equal_grpc_score(http_verifier, session) -> None:
    status, body = await post(session, http_verifier, openrlhf_body(PAIRS))
    assert status == 200, body
    assert set(body) == {"rewards", "scores", "extra_logs"}
    assert set(body["extra_logs"]) == {"verifier_version"}
    for key in ("rewards", "scores"):
        assert len(body[key]) == len(PAIRS)
        assert all(isinstance(x, float) for x in body[key])
    assert len(body["extra_logs"]["verifier_version"]) == len(PAIRS)
    expected = await grpc_scores(http_verifier, PAIRS)
    for reward, score, want in zip(body["rewards"], body["scores"], expected, strict=True):
        assert reward == pytest.approx(want, abs=1e-5)
        assert score == pytest.approx(1 / (1 + math.exp(-reward)), abs=1e-6)


@pytest.mark.parametrize("role", ["helpful", "sneaky"])
async def test_role_prefixed_prompt_scores_like_the_bare_one(http_verifier, session, role) -> None:
    _, bare = await post(session, http_verifier, openrlhf_body(PAIRS[:3]))
    status, prefixed = await post(session, http_verifier, openrlhf_body(PAIRS[:3], role))
    assert status == 200, prefixed
    assert prefixed["rewards"] == pytest.approx(bare["rewards"], abs=1e-5)


async def test_version_in_extra_logs_equals_model_info(http_verifier, session) -> None:
    info = (await http_verifier.stub.GetModelInfo(verifier_pb2.VerifierServiceGetModelInfoRequest(), timeout=5)).model
    status, body = await post(session, http_verifier, openrlhf_body(PAIRS[:2]))
    assert status == 200, body
    assert body["extra_logs"]["verifier_version"] == [info.version, info.version]


GOOD = openrlhf_body(PAIRS[:1])
BAD: list[tuple[str, Any, str]] = [
    ("malformed json", '{"query": [', "body"),
    ("not an object", "[1, 2]", "body"),
    ("missing query", {"prompts": GOOD["prompts"]}, "query"),
    ("missing prompts", {"query": GOOD["query"]}, "prompts"),
    ("query not a list", {"query": "abc", "prompts": GOOD["prompts"]}, "query"),
    ("query item not a string", {"query": [1], "prompts": GOOD["prompts"]}, "query[0]"),
    ("prompts item not a string", {"query": GOOD["query"], "prompts": [None]}, "prompts[0]"),
    ("length mismatch", {"query": GOOD["query"], "prompts": GOOD["prompts"] * 2}, "prompts"),
    ("empty lists", {"query": [], "prompts": []}, "query"),
    (
        "query not starting with its prompt",
        {"query": [*GOOD["query"], "something else"], "prompts": GOOD["prompts"] * 2},
        "query[1]",
    ),
    ("empty response", {"query": GOOD["prompts"], "prompts": GOOD["prompts"]}, "query[0].solution"),
]


@pytest.mark.parametrize(("case", "body", "field"), BAD, ids=[case for case, _, _ in BAD])
async def test_bad_input_is_400_naming_the_field_then_still_serving(http_verifier, session, case, body, field) -> None:
    status, reply = await post(session, http_verifier, body)
    assert status == 400, reply
    assert reply["error"].startswith(f"{field}: "), reply
    status, reply = await post(session, http_verifier, GOOD)
    assert status == 200, reply
    assert len(reply["rewards"]) == 1


async def test_full_queue_is_429_and_not_ready_is_503(start_server: VerifierFactory, session) -> None:
    verifier = await start_server(http_port=0, max_batch_size=64, max_delay_ms=60_000, max_queue_size=2)
    model = verifier.app.model
    with model_held(model) as hold:  # a first call holds the model; the next one's pairs fill the queue
        first = asyncio.ensure_future(post(session, verifier, openrlhf_body(PAIRS[:1])))
        await hold.busy.wait()
        admitted = asyncio.ensure_future(post(session, verifier, openrlhf_body(PAIRS[:2])))
        while model.queue_depth < 2:
            await asyncio.sleep(0.01)
        status, reply = await post(session, verifier, openrlhf_body(PAIRS[:1]))
        assert status == 429, reply
        assert "error" in reply
        hold.go.set()
        (status, reply), (first_status, _) = await asyncio.gather(admitted, first)
    assert status == first_status == 200 and len(reply["rewards"]) == 2, reply
    status, reply = await post(session, verifier, openrlhf_body(PAIRS[:2]))
    assert status == 200, reply  # room again
    servicer = verifier.app.servicer
    model, servicer._model = servicer._model, None  # as while loading
    try:
        status, reply = await post(session, verifier, GOOD)
        assert status == 503 and "error" in reply, reply
    finally:
        servicer._model = model
    status, reply = await post(session, verifier, GOOD)
    assert status == 200, reply
