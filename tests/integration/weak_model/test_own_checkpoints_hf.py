"""The weak model (transformers engine) serving your own checkpoints: the Llama and Qwen2 fixtures, each with its
own byte-level BPE tokenizer, special tokens and context window, on real servers on loopback.

Cuts at every boundary kind from text and token-id prefixes, each family's EOS, special tokens of text prefixes,
log-probs against a direct transformers forward pass, and the tokenizer fingerprint in ModelInfo.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from services.common.artifacts import directory_sha256
from services.common.genproto.legibility.v1 import common_pb2, weak_model_pb2
from services.decoding.boundaries import Boundary, FinishReason, StopRule
from services.decoding.tokens import tokenizer_sha256
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

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

B = weak_model_pb2
FAMILIES = ["llama", "qwen2"]


@pytest.fixture(scope="module")
def references(own_checkpoint: Callable[[str, str], Path]) -> dict[str, Reference]:
    return {family: Reference.load(own_checkpoint(family, "causal")) for family in FAMILIES}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def servers(own_checkpoint: Callable[[str, str], Path]) -> AsyncIterator[dict[str, RunningWeakModel]]:
    """One transformers-engine server per family (small models: both start in seconds)."""
    running = {
        family: await serve_weak_model(model_path=own_checkpoint(family, "causal"), model_name=f"weak-{family}")
        for family in FAMILIES
    }
    yield running
    for server in running.values():
        await server.stop()


async def cont(weak: RunningWeakModel, items: list[weak_model_pb2.ContinueItem]) -> list[weak_model_pb2.ContinueResult]:
    return list((await weak.stub.Continue(B.ContinueRequest(items=items), timeout=120)).results)


@pytest.mark.parametrize("family", FAMILIES)
async def test_every_boundary_cuts_where_the_rules_say(servers, references, family: str) -> None:
    weak, reference = servers[family], references[family]
    cases = rule_cases(reference)
    results = await cont(weak, [case.item() for case in cases])  # one batch: rows of many lengths together
    streams = await cont(weak, [stream_item(case) for case in cases])
    reasons: dict[tuple[Boundary, bool], set[FinishReason]] = {}
    for case, got, stream in zip(cases, results, streams, strict=True):
        reasons.setdefault((case.rule.boundary, bool(case.rule.stop)), set()).add(
            check_cut(reference, case, got, stream)
        )
    assert len(cases) >= 35
    assert FinishReason.BOUNDARY in reasons[(Boundary.WORD, False)]
    assert FinishReason.BOUNDARY in reasons[(Boundary.SENTENCE, False)]
    assert FinishReason.BOUNDARY in reasons[(Boundary.STEP, False)]
    assert reasons[(Boundary.NONE, True)] == {FinishReason.STOP_STRING}
    assert {FinishReason.LENGTH, FinishReason.EOS} <= reasons[(Boundary.NONE, False)]
    assert any(isinstance(case.prefix, tuple) for case in cases) and any(isinstance(c.prefix, str) for c in cases)


@pytest.mark.parametrize("family", FAMILIES)
async def test_greedy_streams_equal_direct_transformers_decoding(servers, references, family: str) -> None:
    """The family's EOS ends a stream (and is not returned); tokens and log-probs are the checkpoint's own."""
    weak, reference = servers[family], references[family]
    cases = [case for case in rule_cases(reference) if case.rule.stop == () and case.rule.boundary is Boundary.NONE]
    streams = await cont(weak, [stream_item(case) for case in cases])
    ended_by_eos = 0
    for case, stream in zip(cases, streams, strict=True):
        prefix = reference.prefix_ids(case.prefix)
        want, eos = reference.greedy([prefix], len(stream.token_ids) + 1)[0]
        if stream.finish_reason == B.FINISH_REASON_EOS:
            ended_by_eos += 1
            assert eos and list(stream.token_ids) == want, case  # the next greedy token was the family's EOS
        else:
            assert list(stream.token_ids) == want[: len(stream.token_ids)], case
        if stream.token_ids:
            direct = reference.logprobs(prefix, list(stream.token_ids))
            assert list(stream.logprobs) == pytest.approx(direct, abs=1e-4), case
    assert ended_by_eos >= 2
    family_eos = {"llama": "</s>", "qwen2": "<|im_end|>"}[family]
    assert reference.tokenizer.convert_ids_to_tokens(reference.eos_id) == family_eos


@pytest.mark.parametrize("family", FAMILIES)
async def test_text_prefixes_get_the_tokenizers_special_tokens(servers, references, family: str) -> None:
    """Llama's tokenizer puts BOS before a text prefix, Qwen2's puts nothing; token-id prefixes are taken as sent."""
    weak, reference = servers[family], references[family]
    plain = reference.tokenizer.encode(TEXTS[0], add_special_tokens=False)
    rule = StopRule(12)
    by_text, with_start, bare = await cont(
        weak, [continue_item(TEXTS[0], rule), continue_item(reference.start + plain, rule), continue_item(plain, rule)]
    )
    assert reference.start == ([reference.tokenizer.bos_token_id] if family == "llama" else [])
    assert by_text.prefix_tokens == with_start.prefix_tokens == len(plain) + len(reference.start)
    assert (by_text.text, list(by_text.token_ids)) == (with_start.text, list(with_start.token_ids))
    assert bare.prefix_tokens == len(plain)
    if family == "llama":  # without its BOS the model sees another sequence
        assert list(bare.logprobs) != pytest.approx(list(by_text.logprobs), abs=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
async def test_logprobs_equal_a_direct_forward_pass(servers, references, family: str) -> None:
    weak, reference = servers[family], references[family]
    tokenizer = reference.tokenizer
    solution = "4*7=28.\n28+3=31.\n#### 31"
    cases = [
        (prefix_value(TEXTS[0]), prefix_value(solution)),
        (prefix_value(""), prefix_value(TEXTS[1])),  # empty context: scored after BOS, else after EOS (Qwen2)
        (prefix_value(tokenizer.encode(TEXTS[2])), prefix_value(tokenizer.encode("#### 31", add_special_tokens=False))),
        (prefix_value(TEXTS[3]), prefix_value(" 7")),
    ]
    items = [B.LogProbsItem(context=context, text=text) for context, text in cases]
    response = await weak.stub.LogProbs(B.LogProbsRequest(items=items), timeout=60)
    empty_context = [tokenizer.bos_token_id if family == "llama" else reference.eos_id]
    contexts = [tokenizer.encode(TEXTS[0]), empty_context, tokenizer.encode(TEXTS[2]), tokenizer.encode(TEXTS[3])]
    texts = [solution, TEXTS[1], "#### 31", " 7"]
    for context, text, result in zip(contexts, texts, response.results, strict=True):
        text_ids = tokenizer.encode(text, add_special_tokens=False)
        want = reference.logprobs(context, text_ids)
        assert list(result.token_ids) == text_ids  # the scored text gets no special tokens
        assert list(result.tokens) == reference.pieces(text_ids)
        assert list(result.logprobs) == pytest.approx(want, abs=1e-4)
        assert result.mean_logprob == pytest.approx(sum(want) / len(want), abs=1e-4)
    assert weak.app.engine.bos_token_id == empty_context[0]


@pytest.mark.parametrize("family", FAMILIES)
async def test_model_info_carries_the_tokenizer_fingerprint(servers, references, family: str) -> None:
    weak, reference = servers[family], references[family]
    info = (await weak.stub.GetModelInfo(B.WeakModelServiceGetModelInfoRequest(), timeout=5)).model
    assert info.tokenizer_sha256 == tokenizer_sha256(reference.tokenizer) == weak.app.engine.tokenizer_sha256
    assert (info.name, info.sha256) == (f"weak-{family}", directory_sha256(reference.path))
    other = "qwen2" if family == "llama" else "llama"
    assert info.tokenizer_sha256 != tokenizer_sha256(references[other].tokenizer)
    rule = StopRule(2)
    continued = await weak.stub.Continue(B.ContinueRequest(items=[continue_item(TEXTS[0], rule)]), timeout=30)
    scored = await weak.stub.LogProbs(
        B.LogProbsRequest(items=[B.LogProbsItem(context=prefix_value(TEXTS[0]), text=prefix_value(" 7"))]), timeout=30
    )
    assert continued.model == scored.model == info
    assert weak.app.engine.context_window == 512  # the checkpoint's max_position_embeddings


async def test_empty_context_needs_room_for_one_start_token(servers, references) -> None:
    """The window is the checkpoint's (512): a text of 512 tokens after an empty context is one too many."""
    weak, reference = servers["qwen2"], references["qwen2"]
    ids = [reference.tokenizer.convert_tokens_to_ids("a")] * 512
    item = B.LogProbsItem(context=common_pb2.TextOrTokens(), text=prefix_value(ids))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await weak.stub.LogProbs(B.LogProbsRequest(items=[item]), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "513 tokens, more than the 512-token context window" in (info.value.details() or "")
    fits = B.LogProbsItem(context=common_pb2.TextOrTokens(), text=prefix_value(ids[:511]))
    response = await weak.stub.LogProbs(B.LogProbsRequest(items=[fits]), timeout=60)
    assert len(response.results[0].logprobs) == 511
