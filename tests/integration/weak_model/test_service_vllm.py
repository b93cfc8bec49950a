"""The vLLM engine on the real server (bundled models/weak): the same continuations as the transformers engine,
seeded sampling, log-probs against a direct forward pass, bad input, overload, ModelInfo.

One vLLM engine start per module (35-65 s on 2 busy cores): every test shares the module's servers and event loop.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
import torch
from grpc_health.v1 import health_pb2
from prometheus_client import REGISTRY
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.common.artifacts import directory_sha256
from services.common.genproto.legibility.v1 import common_pb2, weak_model_pb2
from services.decoding.tokens import tokenizer_sha256
from services.weak_model.service import SERVICE_NAME
from tests.integration.weak_model.conftest import WEAK_MODEL, RunningWeakModel, serve_weak_model
from tests.integration.weak_model.test_invalid_input_hf import (
    CONTINUE_CASES,
    LOGPROBS_CASES,
    continue_request,
    expect_invalid,
    logprobs_request,
    text,
)
from tests.integration.weak_model.test_service_hf import PREFIXES, PROMPT, cont, direct_logprobs, item

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]

B = weak_model_pb2
BOUNDARY, STOP, LENGTH, EOS = (
    B.FINISH_REASON_BOUNDARY,
    B.FINISH_REASON_STOP_STRING,
    B.FINISH_REASON_LENGTH,
    B.FINISH_REASON_EOS,
)
BATCH, QUEUE = 8, 16  # the vLLM server's max_batch_size (vLLM's max_num_seqs) and max_queue_size


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vllm_weak() -> AsyncIterator[RunningWeakModel]:
    running = await serve_weak_model(engine="vllm", max_batch_size=BATCH, max_queue_size=QUEUE)
    engine = weakref.ref(running.app.engine._supervisor.llm)
    yield running
    await running.stop()
    # Stopping frees the engine: one still held at interpreter exit logs a traceback from AsyncLLM.__del__.
    assert engine() is None


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hf_weak() -> AsyncIterator[RunningWeakModel]:
    running = await serve_weak_model(engine="hf", max_queue_size=256)
    yield running
    await running.stop()


def cases() -> list[weak_model_pb2.ContinueItem]:
    """Greedy items covering every boundary, stop strings, length caps, EOS and the context window's edge."""
    items = [item(p, boundary=b) for b in (B.BOUNDARY_NONE, B.BOUNDARY_WORD) for p in PREFIXES]
    items += [item(p, boundary=b) for b in (B.BOUNDARY_SENTENCE, B.BOUNDARY_STEP) for p in PREFIXES]
    items += [
        item(PROMPT, stop=["####", "="]),
        item(PROMPT, stop=[".\n2"]),
        item(PROMPT, stop=[".\n2"], boundary=B.BOUNDARY_WORD),
        item(PROMPT, max_new_tokens=3),
        item(PROMPT, max_new_tokens=3, boundary=B.BOUNDARY_WORD),
        item(PROMPT + "4*7=2", max_new_tokens=2, boundary=B.BOUNDARY_WORD),
        item(PROMPT + "4*7=28.\n28+3=31.\n#### 31"),  # EOS first: an empty continuation
        item([3] * 191, max_new_tokens=50),  # one token of room left in the 192-token window
    ]
    return items


async def continue_all(weak: RunningWeakModel, items: list[weak_model_pb2.ContinueItem]) -> list[Any]:
    """Items in requests of at most QUEUE items, two at a time (within BATCH running + QUEUE waiting)."""
    half = QUEUE // 2 + BATCH // 2
    chunks = [items[i : i + half] for i in range(0, len(items), half)]
    results = []
    for at in range(0, len(chunks), 2):
        for response in await asyncio.gather(*(cont(weak, *chunk) for chunk in chunks[at : at + 2])):
            results += response
    return results


async def test_greedy_continuations_are_identical_to_the_transformers_engine(vllm_weak, hf_weak) -> None:
    items = cases()
    started = time.perf_counter()
    got = await continue_all(vllm_weak, items)
    elapsed = time.perf_counter() - started
    want = await cont(hf_weak, *items)
    assert len(got) == len(want) == len(items) == 36
    for index, (g, w) in enumerate(zip(got, want, strict=True)):
        assert (g.text, list(g.token_ids), g.finish_reason, g.matched_stop, g.prefix_tokens) == (
            w.text,
            list(w.token_ids),
            w.finish_reason,
            w.matched_stop,
            w.prefix_tokens,
        ), index
        assert list(g.logprobs) == pytest.approx(list(w.logprobs), abs=1e-3), index
    assert {g.finish_reason for g in got} == {BOUNDARY, STOP, LENGTH, EOS}
    assert got[-2].text == "" and got[-2].finish_reason == EOS
    assert len(got[-1].token_ids) == 1 and got[-1].finish_reason == LENGTH
    assert sum(len(g.token_ids) for g in got) == sum(len(w.token_ids) for w in want) > 200
    assert elapsed < 60


async def test_seeded_sampling_is_reproducible_in_any_batch(vllm_weak) -> None:
    def sampled(seed: int, prefix: str = PROMPT) -> weak_model_pb2.ContinueItem:
        return item(prefix, temperature=2.0, top_p=0.98, seed=seed, max_new_tokens=40)

    alone = (await cont(vllm_weak, sampled(7)))[0]
    again = (await cont(vllm_weak, sampled(7)))[0]
    crowded = await cont(vllm_weak, sampled(1, PREFIXES[4]), sampled(7), item(PREFIXES[1]), sampled(2))
    concurrent = await asyncio.gather(*(cont(vllm_weak, sampled(7)) for _ in range(4)))
    assert len(alone.token_ids) >= 1
    assert list(again.token_ids) == list(alone.token_ids)
    assert list(crowded[1].token_ids) == list(alone.token_ids)
    assert all(list(c[0].token_ids) == list(alone.token_ids) for c in concurrent)
    assert list(again.logprobs) == pytest.approx(list(alone.logprobs), abs=1e-5)
    distinct = {r.text for r in await cont(vllm_weak, *(sampled(seed) for seed in range(8)))}
    assert len(distinct) >= 3  # seeds matter
    unseeded = {r.text for r in await cont(vllm_weak, *(item(PROMPT, temperature=2.0, max_new_tokens=40),) * 8)}
    assert len(unseeded) >= 3
    # A seeded WORD continuation that needs a second vLLM round (its first token is a space) is reproducible too.
    word = item(PREFIXES[5], temperature=1.5, seed=11, boundary=B.BOUNDARY_WORD, max_new_tokens=20)
    first, second = (await cont(vllm_weak, word))[0], (await cont(vllm_weak, word))[0]
    assert list(first.token_ids) == list(second.token_ids)


@pytest.fixture(scope="module")
def reference_lm() -> tuple[AutoModelForCausalLM, AutoTokenizer]:
    model = AutoModelForCausalLM.from_pretrained(WEAK_MODEL, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(WEAK_MODEL)


async def test_logprobs_agree_with_a_direct_forward_pass(vllm_weak, reference_lm) -> None:
    model, tokenizer = reference_lm
    window = vllm_weak.app.engine.context_window
    cases = [
        (PROMPT, "4*7=28.\n28+3=31.\n#### 31"),
        (PROMPT + "4*7=28.\n", "28+3=31."),
        ("", "Ann has 4 bags."),  # empty context: scored after BOS (= EOS id 0)
        (PROMPT, "4"),  # a one-token text
        (PROMPT * 3, "4*7=28.\n"[: window - 3 * len(PROMPT)]),  # context + text fill the whole window
    ]
    assert len(tokenizer.encode(cases[-1][0] + cases[-1][1])) == window
    items = [B.LogProbsItem(context=common_pb2.TextOrTokens(text=c), text=text(t)) for c, t in cases]
    response = await vllm_weak.stub.LogProbs(B.LogProbsRequest(items=items), timeout=60)
    assert response.model.sha256 == directory_sha256(WEAK_MODEL)
    for (context, value), result in zip(cases, response.results, strict=True):
        context_ids = tokenizer.encode(context) or [tokenizer.bos_token_id]
        text_ids = tokenizer.encode(value, add_special_tokens=False)
        want = direct_logprobs(model, context_ids, text_ids)
        assert list(result.token_ids) == text_ids
        assert list(result.tokens) == list(value)
        assert list(result.logprobs) == pytest.approx(want, abs=1e-3)
        assert result.mean_logprob == pytest.approx(sum(want) / len(want), abs=1e-3)
    # Continue's log-probs are under the unmodified distribution too, sampled or not.
    greedy, hot = await cont(
        vllm_weak,
        item(PROMPT, max_new_tokens=30),
        item(PROMPT, max_new_tokens=30, temperature=2.0, top_p=0.9, seed=3),
    )
    for result in (greedy, hot):
        want = direct_logprobs(model, tokenizer.encode(PROMPT), list(result.token_ids))
        assert list(result.logprobs) == pytest.approx(want, abs=1e-3)


async def test_bad_input_is_invalid_argument_and_the_next_request_succeeds(vllm_weak) -> None:
    continue_cases = [case for case in CONTINUE_CASES if "at most" not in case[1] and "256" not in case[1]]
    continue_cases += [(continue_request(*[{}] * (QUEUE + 1)), f"items: at most {QUEUE} items per request")]
    assert len(continue_cases) >= 15
    for request, detail in continue_cases:
        await expect_invalid(vllm_weak.stub.Continue, request, detail)
    good = await vllm_weak.stub.Continue(continue_request({}), timeout=30)
    assert len(good.results) == 1 and len(good.results[0].token_ids) == 4
    for request, detail in LOGPROBS_CASES:
        await expect_invalid(vllm_weak.stub.LogProbs, request, detail)
    good_logprobs = await vllm_weak.stub.LogProbs(logprobs_request(text(PROMPT), text("4*7=28.")), timeout=30)
    assert len(good_logprobs.results[0].logprobs) == 7


async def test_overload_is_resource_exhausted_at_once_while_health_answers(vllm_weak, monkeypatch) -> None:
    engine = vllm_weak.app.engine
    # Admitted items wait for this gate before reaching vLLM, so "full" is a state, not a race with the model.
    gate = asyncio.Event()
    original = engine._continue_one

    async def held(request):
        await gate.wait()
        return await original(request)

    monkeypatch.setattr(engine, "_continue_one", held)
    running = asyncio.ensure_future(vllm_weak.stub.Continue(continue_request(*[{}] * BATCH), timeout=60))
    waiting = asyncio.ensure_future(vllm_weak.stub.Continue(continue_request(*[{}] * QUEUE), timeout=60))
    while engine.queue_depth < QUEUE:
        await asyncio.sleep(0.005)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await vllm_weak.raw_stub.Continue(continue_request({}), timeout=10)  # the server's answer, not retried
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"{QUEUE} items waiting, 1 more would pass max_queue_size {QUEUE}" in info.value.details()
    # The queue-depth gauge the alerts and the dashboard read (deploy/monitoring) counts them too.
    assert REGISTRY.get_sample_value("legibility_batch_queue_depth", {"batcher": "weak_model"}) == QUEUE
    check = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
    assert (await vllm_weak.health.Check(check, timeout=2)).status == health_pb2.HealthCheckResponse.SERVING
    assert not running.done() and not waiting.done()  # both answered while the gate held everything: nothing waited
    gate.set()
    first, second = await asyncio.gather(running, waiting)
    assert [len(r.token_ids) for r in [*first.results, *second.results]] == [4] * (BATCH + QUEUE)
    assert engine.queue_depth == 0
    assert len((await vllm_weak.stub.Continue(continue_request({}), timeout=30)).results) == 1  # room again


async def test_model_info_reports_the_verified_weights(vllm_weak) -> None:
    info = (await vllm_weak.stub.GetModelInfo(B.WeakModelServiceGetModelInfoRequest(), timeout=5)).model
    assert info.sha256 == directory_sha256(WEAK_MODEL)
    assert (info.name, info.version, info.uri) == ("weak", 0, str(WEAK_MODEL.resolve()))
    assert info.tokenizer_sha256 == tokenizer_sha256(AutoTokenizer.from_pretrained(WEAK_MODEL))
    response = await vllm_weak.stub.Continue(B.ContinueRequest(items=[item(PROMPT, max_new_tokens=2)]), timeout=30)
    assert response.model == info
