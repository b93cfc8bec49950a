"""Fuzzed inputs against the real verifier and weak-model servers (bundled models, loopback): every RPC and the HTTP
reward route answer a correct result or INVALID_ARGUMENT / 400 naming the field, never INTERNAL / 500, never hang,
and the server still answers health and a good call after each case.

The servers run on an event loop in a thread of their own; hypothesis drives them with blocking clients.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.common.genproto.legibility.v1 import (
    common_pb2,
    learner_pb2,
    learner_pb2_grpc,
    verifier_pb2,
    verifier_pb2_grpc,
    weak_model_pb2,
    weak_model_pb2_grpc,
)
from services.learner.app import start_learner
from services.learner.settings import LearnerSettings
from services.verifier.app import VerifierApp, start_verifier
from services.verifier.settings import VerifierSettings
from services.weak_model.app import WeakModelApp, start_weak_model
from services.weak_model.settings import WeakModelSettings
from tests.support.running import QUICK

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
PROMPT = "Ann has 4 bags of 7 pens. She gets 3 more. How many pens now?\n"
ACCEPTABLE = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}


@dataclass
class Servers:
    weak: weak_model_pb2_grpc.WeakModelServiceStub
    verifier: verifier_pb2_grpc.VerifierServiceStub
    raw_score: Any
    health: list[health_pb2_grpc.HealthStub]
    http_url: str


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, loop)
        return future.result(timeout=300)

    weak: WeakModelApp = run(start_weak_model(WeakModelSettings(**QUICK, torch_threads=1)))
    verifier: VerifierApp = run(start_verifier(VerifierSettings(**QUICK, http_port=0, torch_threads=1)))
    channels = [grpc.insecure_channel(f"127.0.0.1:{app.server.port}") for app in (weak, verifier)]
    try:
        yield Servers(
            weak=weak_model_pb2_grpc.WeakModelServiceStub(channels[0]),
            verifier=verifier_pb2_grpc.VerifierServiceStub(channels[1]),
            raw_score=channels[1].unary_unary(
                "/legibility.v1.VerifierService/Score",
                request_serializer=None,
                response_deserializer=verifier_pb2.ScoreResponse.FromString,
            ),
            health=[health_pb2_grpc.HealthStub(channel) for channel in channels],
            http_url=f"http://127.0.0.1:{verifier.http_port}/get_reward",
        )
    finally:
        for channel in channels:
            channel.close()
        run(weak.stop())
        run(verifier.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


def answered(call: Any, request: Any) -> grpc.StatusCode:
    """The call's status; INVALID_ARGUMENT must name a field (``items…: …``, ``request: …``)."""
    try:
        call(request, timeout=60)
    except grpc.RpcError as error:
        code = error.code()
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            assert error.details().split(":")[0].startswith(("items", "request")), error.details()
        return code
    return grpc.StatusCode.OK


def still_serving(servers: Servers) -> None:
    for stub in servers.health:
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    good = weak_model_pb2.ContinueItem(prefix=common_pb2.TextOrTokens(text=PROMPT), max_new_tokens=2)
    assert len(servers.weak.Continue(weak_model_pb2.ContinueRequest(items=[good]), timeout=30).results) == 1


texts = st.text(max_size=400) | st.sampled_from(["", " ", "\n", PROMPT, "é" * 50, "x" * 3000])
numbers = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 1.0, -1.0, 1e-30])
ints = st.integers(-(2**31), 2**31 - 1) | st.integers(-3, 300)
token_ids = st.lists(st.integers(-(2**31), 2**31 - 1) | st.integers(0, 120), max_size=40)


@st.composite
def text_or_tokens(draw: st.DrawFn) -> common_pb2.TextOrTokens:
    kind = draw(st.sampled_from(["text", "tokens", "unset"]))
    if kind == "text":
        return common_pb2.TextOrTokens(text=draw(texts))
    if kind == "tokens":
        return common_pb2.TextOrTokens(token_ids=common_pb2.TokenIds(ids=draw(token_ids)))
    return common_pb2.TextOrTokens()


@st.composite
def continue_items(draw: st.DrawFn) -> weak_model_pb2.ContinueItem:
    item = weak_model_pb2.ContinueItem(
        prefix=draw(text_or_tokens()),
        max_new_tokens=draw(st.integers(-3, 300)),
        boundary=draw(st.integers(-2, 8)),
        temperature=draw(numbers),
        stop=draw(st.lists(texts, max_size=3)),
    )
    if draw(st.booleans()):
        item.top_p = draw(numbers)
    if draw(st.booleans()):
        item.seed = draw(st.integers(0, 2**63 - 1))
    return item


@given(items=st.lists(continue_items(), max_size=6))
@example(items=[weak_model_pb2.ContinueItem(prefix=common_pb2.TextOrTokens(text=PROMPT), max_new_tokens=1)] * 10_000)
@FUZZ
def test_continue(servers: Servers, items: list[weak_model_pb2.ContinueItem]) -> None:
    assert answered(servers.weak.Continue, weak_model_pb2.ContinueRequest(items=items)) in ACCEPTABLE
    still_serving(servers)


@given(
    items=st.lists(st.builds(weak_model_pb2.LogProbsItem, context=text_or_tokens(), text=text_or_tokens()), max_size=6)
)
@FUZZ
def test_logprobs(servers: Servers, items: list[weak_model_pb2.LogProbsItem]) -> None:
    assert answered(servers.weak.LogProbs, weak_model_pb2.LogProbsRequest(items=items)) in ACCEPTABLE
    still_serving(servers)


@given(
    items=st.lists(st.builds(verifier_pb2.ScoreItem, problem=texts, solution=texts), max_size=6),
    min_version=st.integers(0, 3),
)
@FUZZ
def test_score(servers: Servers, items: list[verifier_pb2.ScoreItem], min_version: int) -> None:
    code = answered(servers.verifier.Score, verifier_pb2.ScoreRequest(items=items, min_version=min_version))
    # min_version above the served version 0 is FAILED_PRECONDITION, by design.
    assert code in ACCEPTABLE | ({grpc.StatusCode.FAILED_PRECONDITION} if min_version > 0 else set())
    still_serving(servers)


@given(
    items=st.lists(
        st.builds(
            verifier_pb2.ScoreStepsItem,
            problem=texts,
            solution=texts,
            step_ends=st.lists(st.integers(-(2**31), 2**31 - 1) | st.integers(-2, 60), max_size=8),
        ),
        max_size=4,
    )
)
@FUZZ
def test_score_steps(servers: Servers, items: list[verifier_pb2.ScoreStepsItem]) -> None:
    assert answered(servers.verifier.ScoreSteps, verifier_pb2.ScoreStepsRequest(items=items)) in ACCEPTABLE
    still_serving(servers)


@given(raw=st.binary(max_size=300))
@example(raw=b"\x0a\x04\x0a\x02\xff\xfe")
@FUZZ
def test_score_wire_bytes(servers: Servers, raw: bytes) -> None:
    # Bytes that decode to min_version > 0 are FAILED_PRECONDITION (the served version is 0), by design.
    assert answered(servers.raw_score, raw) in ACCEPTABLE | {grpc.StatusCode.FAILED_PRECONDITION}
    still_serving(servers)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | texts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
reward_bodies = st.fixed_dictionaries(
    {},
    optional={
        "query": st.lists(texts, max_size=4) | json_values,
        "prompts": st.lists(texts, max_size=4) | json_values,
        "labels": st.lists(texts, max_size=4) | json_values,
    },
)


@given(body=st.one_of(reward_bodies.map(json.dumps), json_values.map(json.dumps), st.binary(max_size=200)))
@example(body='{"query": ' + "[" * 50_000 + "]" * 50_000 + "}")
@example(body=json.dumps({"query": [PROMPT + "4*7=28.\n#### 28"], "prompts": [PROMPT], "labels": ["28"]}))
@FUZZ
def test_get_reward_body(servers: Servers, body: str | bytes) -> None:
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(servers.http_url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, reply = response.status, json.loads(response.read())
        assert set(reply) == {"rewards", "scores", "extra_logs"}
    except urllib.error.HTTPError as error:
        status, reply = error.code, json.loads(error.read())
        assert reply["error"].split(":")[0].startswith(("body", "query", "prompts", "labels")), reply
    assert status in (200, 400)
    still_serving(servers)


# -- the learner ---------------------------------------------------------------------------------------------------

maybe_float = st.none() | numbers
maybe_int = st.none() | ints


@st.composite
def run_configs(draw: st.DrawFn) -> learner_pb2.RunConfig:
    return learner_pb2.RunConfig(
        name=draw(texts),
        mode=draw(st.integers(-1, 5)),
        steps=draw(ints),
        seed=draw(st.integers(-(2**63), 2**63 - 1)),
        policy_model=draw(st.sampled_from(["", "/nonexistent", "models/strong"]) | texts),
        handoff=learner_pb2.HandoffSchedule(
            strategy=draw(st.integers(-1, 12)),
            p_primary=draw(maybe_float),
            max_gap_tokens=draw(maybe_int),
            chunk_tokens=draw(maybe_int),
            gap_rule=draw(st.integers(-1, 4)),
        ),
        optimizer=learner_pb2.PolicyOptimizer(
            learning_rate=draw(maybe_float),
            group_size=draw(maybe_int),
            problems_per_step=draw(maybe_int),
            clip_eps=draw(maybe_float),
            kl_coef=draw(maybe_float),
            junior_token_weight=draw(maybe_float),
            temperature=draw(maybe_float),
            max_new_tokens=draw(maybe_int),
            ppo_epochs=draw(maybe_int),
            mini_batches=draw(maybe_int),
        ),
        game=learner_pb2.GameConfig(
            reward=draw(st.integers(-1, 6)),
            rounds=draw(maybe_int),
            steps_per_round=draw(maybe_int),
            verifier_loss=draw(st.integers(-1, 5)),
            centering_lambda=draw(maybe_float),
            dca=draw(st.booleans()),
            src_baseline=draw(st.integers(-1, 4)),
            tandem_rollouts=draw(st.booleans()),
            attack_steps=draw(maybe_int),
            attack_fool_rate=draw(maybe_float),
            learning_rate=draw(maybe_float),
            attack_learning_rate=draw(maybe_float),
            kl_coef=draw(maybe_float),
        ),
        evaluation=learner_pb2.EvaluationConfig(every_steps=draw(maybe_int), num_problems=draw(maybe_int)),
        format_bonus=draw(maybe_float),
        task=learner_pb2.TaskConfig(
            name=draw(st.sampled_from(["", "toy", "gsm8k", "math"]) | texts),
            data=draw(st.sampled_from(["", "tests/data/gsm8k_sample.jsonl", "/nonexistent.jsonl"]) | texts),
            chat_template=draw(st.integers(-1, 4)),
        ),
    )


@pytest.fixture(scope="module")
def learner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[learner_pb2_grpc.LearnerServiceStub]:
    """A learner whose services are nowhere (its accepted runs fail at their first call, which is fine here)."""
    root = tmp_path_factory.mktemp("learner")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    settings = LearnerSettings(
        **QUICK, runs_dir=root / "runs", artifact_root=root / "artifacts", torch_threads=1, max_concurrent_runs=256,
        weak_model_target="127.0.0.1:9", verifier_target="127.0.0.1:9",
    )  # fmt: skip
    app = asyncio.run_coroutine_threadsafe(start_learner(settings), loop).result(timeout=120)
    channel = grpc.insecure_channel(f"127.0.0.1:{app.server.port}")
    try:
        yield learner_pb2_grpc.LearnerServiceStub(channel)
    finally:
        channel.close()
        asyncio.run_coroutine_threadsafe(app.stop(), loop).result(timeout=120)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


@given(config=run_configs())
@example(config=learner_pb2.RunConfig(mode=1, steps=1, evaluation=learner_pb2.EvaluationConfig(num_problems=2**31 - 1)))
@FUZZ
def test_start_run(learner: learner_pb2_grpc.LearnerServiceStub, config: learner_pb2.RunConfig) -> None:
    before = {r.run_id for r in learner.ListRuns(learner_pb2.ListRunsRequest(), timeout=30).runs}
    try:
        run = learner.StartRun(learner_pb2.StartRunRequest(config=config), timeout=60).run
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert error.details().startswith("config"), error.details()
        started: set[str] = set()
    else:
        learner.StopRun(learner_pb2.StopRunRequest(run_id=run.run_id), timeout=60)
        started = {run.run_id}
    # Still answering, and a refused config left no run behind.
    after = {r.run_id for r in learner.ListRuns(learner_pb2.ListRunsRequest(), timeout=30).runs}
    assert after - before == started


@given(run_id=texts, after=st.integers(-(2**63), 2**63 - 1))
@FUZZ
def test_run_ids(learner: learner_pb2_grpc.LearnerServiceStub, run_id: str, after: int) -> None:
    calls = [
        lambda: learner.GetRun(learner_pb2.GetRunRequest(run_id=run_id), timeout=30),
        lambda: learner.StopRun(learner_pb2.StopRunRequest(run_id=run_id), timeout=30),
        lambda: next(
            iter(learner.WatchRun(learner_pb2.WatchRunRequest(run_id=run_id, after_sequence=after), timeout=5))
        ),
    ]
    for call in calls:
        try:
            call()
        except grpc.RpcError as error:
            assert error.code() in {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT}, error.details()
