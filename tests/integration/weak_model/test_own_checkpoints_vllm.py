"""The vLLM engine serving the Llama fixture checkpoint (64-wide heads: vLLM's own CPU kernels, no GPT-2 patch):
greedy continuations identical to the transformers engine at every boundary, cuts where the rules say, log-probs
against a direct forward pass, seeded sampling, the tokenizer fingerprint in ModelInfo.

One vLLM engine start for the module (35-100 s on 2 busy cores); the transformers server beside it starts in seconds.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from services.common.artifacts import directory_sha256
from services.common.bundled_models import BUNDLED_WEAK
from services.common.genproto.legibility.v1 import weak_model_pb2
from services.decoding.boundaries import Boundary, FinishReason, StopRule
from services.decoding.tokens import tokenizer_sha256
from services.decoding.vllm_heads import PAD_HEADS_ENV, PaddedHeadsWorkerExtension
from tests.integration.weak_model.conftest import RunningWeakModel, serve_weak_model
from tests.integration.weak_model.own_checkpoints import (
    TEXTS,
    Reference,
    check_cut,
    continue_item,
    prefix_value,
    rule_cases,
    stream_item,
)

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(600)]

B = weak_model_pb2
BATCH, QUEUE = 8, 64


@pytest.fixture(scope="module")
def llama(own_checkpoint: Callable[[str, str], Path]) -> Path:
    return own_checkpoint("llama", "causal")


@pytest.fixture(scope="module")
def reference(llama: Path) -> Reference:
    return Reference.load(llama)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vllm_llama(llama: Path) -> AsyncIterator[RunningWeakModel]:
    running = await serve_weak_model(
        engine="vllm", model_path=llama, model_name="weak-llama", max_batch_size=BATCH, max_queue_size=QUEUE
    )
    yield running
    await running.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hf_llama(llama: Path) -> AsyncIterator[RunningWeakModel]:
    running = await serve_weak_model(engine="hf", model_path=llama, model_name="weak-llama")
    yield running
    await running.stop()


async def cont(weak: RunningWeakModel, items: list[weak_model_pb2.ContinueItem]) -> list[weak_model_pb2.ContinueResult]:
    return list((await weak.stub.Continue(B.ContinueRequest(items=items), timeout=300)).results)


async def test_greedy_continuations_are_identical_to_the_transformers_engine(vllm_llama, hf_llama, reference) -> None:
    cases = rule_cases(reference)
    assert BATCH + QUEUE >= len(cases) >= 35
    got = await cont(vllm_llama, [case.item() for case in cases])
    want = await cont(hf_llama, [case.item() for case in cases])
    streams = await cont(vllm_llama, [stream_item(case) for case in cases])
    reasons = set()
    for index, (case, g, w, stream) in enumerate(zip(cases, got, want, streams, strict=True)):
        assert (g.text, list(g.token_ids), g.finish_reason, g.matched_stop, g.prefix_tokens) == (
            w.text,
            list(w.token_ids),
            w.finish_reason,
            w.matched_stop,
            w.prefix_tokens,
        ), (index, case)
        assert list(g.logprobs) == pytest.approx(list(w.logprobs), abs=1e-3), (index, case)
        reasons.add((case.rule.boundary, check_cut(reference, case, g, stream)))
    assert {(b, FinishReason.BOUNDARY) for b in (Boundary.WORD, Boundary.SENTENCE, Boundary.STEP)} <= reasons
    assert {(Boundary.NONE, r) for r in (FinishReason.STOP_STRING, FinishReason.LENGTH, FinishReason.EOS)} <= reasons
    assert sum(len(g.token_ids) for g in got) > 300


async def test_logprobs_equal_a_direct_forward_pass(vllm_llama, reference) -> None:
    tokenizer = reference.tokenizer
    solution = "4*7=28.\n28+3=31.\n#### 31"
    items = [
        B.LogProbsItem(context=prefix_value(TEXTS[0]), text=prefix_value(solution)),
        B.LogProbsItem(context=prefix_value(""), text=prefix_value(TEXTS[1])),  # empty context: after BOS <s>
        B.LogProbsItem(context=prefix_value(TEXTS[3]), text=prefix_value(" 7")),  # one text token
    ]
    response = await vllm_llama.stub.LogProbs(B.LogProbsRequest(items=items), timeout=120)
    contexts = [tokenizer.encode(TEXTS[0]), [tokenizer.bos_token_id], tokenizer.encode(TEXTS[3])]
    for context, text, result in zip(contexts, [solution, TEXTS[1], " 7"], response.results, strict=True):
        text_ids = tokenizer.encode(text, add_special_tokens=False)
        want = reference.logprobs(context, text_ids)
        assert list(result.token_ids) == text_ids
        assert list(result.logprobs) == pytest.approx(want, abs=1e-4)
    assert len(response.results[2].token_ids) == 1


async def test_seeded_sampling_is_reproducible(vllm_llama) -> None:
    def sampled(seed: int) -> weak_model_pb2.ContinueItem:
        return continue_item(TEXTS[0], StopRule(20, Boundary.WORD), temperature=1.5, seed=seed)

    first, _, second = await cont(vllm_llama, [sampled(5), sampled(6), sampled(5)])  # in a crowded batch too
    again = (await cont(vllm_llama, [sampled(5)]))[0]
    assert len(first.token_ids) >= 1
    assert list(first.token_ids) == list(second.token_ids) == list(again.token_ids)
    distinct = {r.text for r in await cont(vllm_llama, [sampled(seed) for seed in range(8)])}
    assert len(distinct) >= 3


async def test_model_info_carries_the_tokenizer_fingerprint(vllm_llama, reference, llama) -> None:
    info = (await vllm_llama.stub.GetModelInfo(B.WeakModelServiceGetModelInfoRequest(), timeout=5)).model
    assert info.tokenizer_sha256 == tokenizer_sha256(reference.tokenizer) == vllm_llama.app.engine.tokenizer_sha256
    assert (info.name, info.sha256) == ("weak-llama", directory_sha256(llama))
    response = await vllm_llama.stub.Continue(B.ContinueRequest(items=[continue_item(TEXTS[0], StopRule(2))]))
    assert response.model == info
    assert vllm_llama.app.engine.context_window == 512


async def test_the_head_padding_patch_is_for_narrow_gpt2_heads_only(llama, monkeypatch) -> None:
    """With vLLM's real CPU kernel list: the bundled GPT-2 (16-wide heads) gets the patch, Llama does not."""
    from services.weak_model.engines.vllm import engine_args

    monkeypatch.setenv(PAD_HEADS_ENV, "0")  # engine_args sets it for the GPT-2; restored after the test
    plain = engine_args(llama, context_window=512, seed=0, max_num_seqs=1)
    assert plain.worker_extension_cls == ""
    assert plain.dtype == "float32"
    assert os.environ[PAD_HEADS_ENV] == "0"
    padded = engine_args(BUNDLED_WEAK, context_window=192, seed=0, max_num_seqs=1)
    assert padded.worker_extension_cls == PaddedHeadsWorkerExtension.qualified_name()
    assert os.environ[PAD_HEADS_ENV] == "1"
