"""Continue and LogProbs on the real server (transformers engine, bundled models/weak): exact boundaries, seeds,
log-probs against a direct forward pass, ModelInfo."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.common.artifacts import directory_sha256
from services.common.genproto.legibility.v1 import common_pb2, weak_model_pb2
from services.decoding.tokens import tokenizer_sha256
from tests.integration.weak_model.conftest import WEAK_MODEL

PROMPT = "Ann has 4 bags of 7 pens. She gets 3 more. How many pens now?\n"
PREFIXES = [
    PROMPT,
    PROMPT + "4*7=2",  # mid-word
    PROMPT + "4*7=28.",  # a sentence just ended: the continuation starts at the newline
    PROMPT + "4*7=28.\n",
    PROMPT + "4*7=28.\n28+3=",
    PROMPT + "4*7=28.\n28+3=31.\n####",  # the next token is a space: kept, at least one token
    "Bo has 12 cups. He breaks 5. How many cups now?\n",
]
B = weak_model_pb2
BOUNDARY, STOP, LENGTH, EOS = (
    B.FINISH_REASON_BOUNDARY,
    B.FINISH_REASON_STOP_STRING,
    B.FINISH_REASON_LENGTH,
    B.FINISH_REASON_EOS,
)


def item(prefix: str | list[int], **fields: object) -> weak_model_pb2.ContinueItem:
    value = (
        common_pb2.TextOrTokens(text=prefix)
        if isinstance(prefix, str)
        else common_pb2.TextOrTokens(token_ids=common_pb2.TokenIds(ids=prefix))
    )
    return weak_model_pb2.ContinueItem(prefix=value, **{"max_new_tokens": 256, **fields})  # type: ignore[arg-type]


async def cont(weak, *items: weak_model_pb2.ContinueItem) -> list[weak_model_pb2.ContinueResult]:
    return list((await weak.stub.Continue(weak_model_pb2.ContinueRequest(items=items), timeout=30)).results)


def expected_cut(stream: str, ended_by_eos: bool, boundary: int) -> tuple[str, int]:
    """The rules restated on characters, independently of services.decoding.boundaries."""
    for i in range(1, len(stream) + 1):
        if boundary == B.BOUNDARY_STEP and stream[i - 1] == "\n":
            return stream[:i], BOUNDARY
        nxt = stream[i] if i < len(stream) else ""
        if boundary == B.BOUNDARY_WORD and nxt.isspace():
            return stream[:i], BOUNDARY
        if boundary == B.BOUNDARY_SENTENCE and stream[i - 1] in ".!?" and nxt.isspace():
            return stream[:i], BOUNDARY
    return stream, EOS if ended_by_eos else LENGTH


@pytest.mark.parametrize("boundary", [B.BOUNDARY_WORD, B.BOUNDARY_SENTENCE, B.BOUNDARY_STEP])
async def test_boundary_stops_land_exactly_on_word_sentence_and_step_ends(weak, boundary: int) -> None:
    references = [(await cont(weak, item(p)))[0] for p in PREFIXES]  # greedy, no boundary: the full stream
    results = await cont(weak, *(item(p, boundary=boundary) for p in PREFIXES))  # one batch
    reasons = set()
    for prefix, ref, got in zip(PREFIXES, references, results, strict=True):
        want_text, want_reason = expected_cut(ref.text, ref.finish_reason == EOS, boundary)
        assert (got.text, got.finish_reason) == (want_text, want_reason), prefix
        assert len(got.token_ids) == len(got.text) >= 1  # one token per character
        assert list(got.token_ids) == list(ref.token_ids[: len(got.token_ids)])
        assert list(got.logprobs) == pytest.approx(list(ref.logprobs[: len(got.logprobs)]), abs=1e-4)
        assert got.prefix_tokens == len(prefix)
        reasons.add(got.finish_reason)
    assert BOUNDARY in reasons
    if boundary == B.BOUNDARY_WORD:
        assert results[1].text == "8."  # "4*7=2" + "8." and the next character is the newline
        assert results[5].text.startswith(" ") and " " not in results[5].text[1:]
    if boundary == B.BOUNDARY_STEP:
        assert all(r.text.count("\n") == 1 and r.text.endswith("\n") for r in results if r.finish_reason == BOUNDARY)


async def test_stop_strings_end_right_after_the_match_and_are_kept(weak) -> None:
    ref = (await cont(weak, item(PROMPT)))[0].text
    got = (await cont(weak, item(PROMPT, stop=["####", "="])))[0]
    assert (got.text, got.finish_reason, got.matched_stop) == (ref[: ref.index("=") + 1], STOP, "=")
    got = (await cont(weak, item(PROMPT, stop=[".\n2"], boundary=B.BOUNDARY_WORD)))[0]
    assert got.finish_reason == BOUNDARY and got.matched_stop == ""  # the word ends first
    got = (await cont(weak, item(PROMPT, stop=[".\n2"])))[0]
    assert (got.text, got.matched_stop) == (ref[: ref.index(".\n2") + 3], ".\n2")


async def test_length_counts_kept_tokens_and_the_context_window_bounds_generation(weak) -> None:
    ref = (await cont(weak, item(PROMPT)))[0].text  # "4*7=28.\n..."
    none, word, exact = await cont(
        weak,
        item(PROMPT, max_new_tokens=3),
        item(PROMPT, max_new_tokens=3, boundary=B.BOUNDARY_WORD),  # the word "4*7=28." is longer
        item(PROMPT + "4*7=2", max_new_tokens=2, boundary=B.BOUNDARY_WORD),  # "8." ends exactly at the cap
    )
    assert (none.text, none.finish_reason) == (ref[:3], LENGTH)
    assert (word.text, word.finish_reason) == (ref[:3], LENGTH)
    assert (exact.text, exact.finish_reason) == ("8.", BOUNDARY)
    window = weak.app.engine.context_window
    last = (await cont(weak, item([3] * (window - 1), max_new_tokens=50)))[0]
    assert (len(last.token_ids), last.finish_reason, last.prefix_tokens) == (1, LENGTH, window - 1)


async def test_token_id_prefix_gives_the_same_continuation_as_text(weak) -> None:
    ids = weak.app.engine.encode(PREFIXES[3], add_special_tokens=True)
    by_text, by_ids = await cont(weak, item(PREFIXES[3]), item(ids))
    assert by_ids.text == by_text.text and list(by_ids.token_ids) == list(by_text.token_ids)
    assert by_ids.prefix_tokens == len(ids) == len(PREFIXES[3])


async def test_seeded_sampling_is_reproducible_in_any_batch(weak) -> None:
    def sampled(seed: int, prefix: str = PROMPT) -> weak_model_pb2.ContinueItem:
        return item(prefix, temperature=2.0, top_p=0.98, seed=seed, max_new_tokens=40)

    alone = (await cont(weak, sampled(7)))[0]
    again = (await cont(weak, sampled(7)))[0]
    crowded = await cont(weak, sampled(1, PREFIXES[4]), sampled(7), item(PREFIXES[1]), sampled(2))
    concurrent = await asyncio.gather(*(cont(weak, sampled(7)) for _ in range(4)))
    assert list(again.token_ids) == list(alone.token_ids)
    assert list(crowded[1].token_ids) == list(alone.token_ids)
    assert all(list(c[0].token_ids) == list(alone.token_ids) for c in concurrent)
    assert list(again.logprobs) == pytest.approx(list(alone.logprobs), abs=1e-5)
    distinct = {r.text for r in await cont(weak, *(sampled(seed) for seed in range(8)))}
    assert len(distinct) >= 3  # seeds matter
    unseeded = {r.text for r in await cont(weak, *(item(PROMPT, temperature=2.0, max_new_tokens=40),) * 8)}
    assert len(unseeded) >= 3


@pytest.fixture(scope="module")
def reference_lm() -> tuple[AutoModelForCausalLM, AutoTokenizer]:
    model = AutoModelForCausalLM.from_pretrained(WEAK_MODEL, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(WEAK_MODEL)


def direct_logprobs(model: AutoModelForCausalLM, context: list[int], text: list[int]) -> list[float]:
    """Log-probs of text after context from one unpadded forward pass."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([context + text])).logits[0].float()
    logprobs = torch.log_softmax(logits[len(context) - 1 : -1], dim=-1)
    return logprobs.gather(-1, torch.tensor(text)[:, None])[:, 0].tolist()


async def test_logprobs_agree_with_a_direct_forward_pass(weak, reference_lm) -> None:
    model, tokenizer = reference_lm
    cases = [
        (PROMPT, "4*7=28.\n28+3=31.\n#### 31"),
        (PROMPT + "4*7=28.\n", "28+3=31."),
        ("", "Ann has 4 bags."),  # empty context: scored after BOS (= EOS id 0)
    ]
    items = [
        weak_model_pb2.LogProbsItem(context=common_pb2.TextOrTokens(text=c), text=common_pb2.TextOrTokens(text=t))
        for c, t in cases
    ]
    ids = tokenizer.encode("#### 31", add_special_tokens=False)
    items.append(
        weak_model_pb2.LogProbsItem(
            context=common_pb2.TextOrTokens(token_ids=common_pb2.TokenIds(ids=tokenizer.encode(PROMPT))),
            text=common_pb2.TextOrTokens(token_ids=common_pb2.TokenIds(ids=ids)),
        )
    )
    cases.append((PROMPT, "#### 31"))
    response = await weak.stub.LogProbs(weak_model_pb2.LogProbsRequest(items=items), timeout=30)
    assert response.model.sha256 == directory_sha256(WEAK_MODEL)
    for (context, text), result in zip(cases, response.results, strict=True):
        context_ids = tokenizer.encode(context) or [tokenizer.bos_token_id]
        text_ids = tokenizer.encode(text, add_special_tokens=False)
        want = direct_logprobs(model, context_ids, text_ids)
        assert list(result.token_ids) == text_ids
        assert list(result.tokens) == list(text)
        assert list(result.logprobs) == pytest.approx(want, abs=1e-3)
        assert result.mean_logprob == pytest.approx(sum(want) / len(want), abs=1e-3)
        assert all(lp <= 0 for lp in result.logprobs)
    # The bundled weak model knows the format: its own solution costs it far less than a scrambled one.
    scrambled = await weak.stub.LogProbs(
        weak_model_pb2.LogProbsRequest(
            items=[
                weak_model_pb2.LogProbsItem(
                    context=common_pb2.TextOrTokens(text=PROMPT), text=common_pb2.TextOrTokens(text="=82*7.4\n")
                )
            ]
        ),
        timeout=30,
    )
    assert scrambled.results[0].mean_logprob < response.results[1].mean_logprob - 1.0


async def test_continue_logprobs_are_under_the_unmodified_distribution(weak, reference_lm) -> None:
    model, tokenizer = reference_lm
    greedy, hot = await cont(
        weak, item(PROMPT, max_new_tokens=30), item(PROMPT, max_new_tokens=30, temperature=2.0, top_p=0.9, seed=3)
    )
    for result in (greedy, hot):
        want = direct_logprobs(model, tokenizer.encode(PROMPT), list(result.token_ids))
        assert list(result.logprobs) == pytest.approx(want, abs=1e-3)
    assert all(math.isfinite(lp) for lp in hot.logprobs)


async def test_model_info_reports_the_verified_weights(weak) -> None:
    info = (await weak.stub.GetModelInfo(weak_model_pb2.WeakModelServiceGetModelInfoRequest(), timeout=5)).model
    assert info.sha256 == directory_sha256(WEAK_MODEL)
    assert (info.name, info.version, info.uri) == ("weak", 0, str(WEAK_MODEL.resolve()))
    assert info.tokenizer_sha256 == tokenizer_sha256(AutoTokenizer.from_pretrained(WEAK_MODEL))
    assert abs(info.loaded_at.ToDatetime(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=5)
    response = await weak.stub.Continue(weak_model_pb2.ContinueRequest(items=[item(PROMPT, max_new_tokens=2)]))
    assert response.model == info
