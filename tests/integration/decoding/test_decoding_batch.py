"""DecodingBatch on the bundled model: a row continued in the batch, or one that leaves and joins again, writes the
tokens that a fresh prefill of each segment writes; the roomy cache computes what transformers' own one does."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from services.decoding.boundaries import Boundary, StopRule
from services.decoding.hf_batch import DecodingBatch, Generated
from services.decoding.hf_loop import generate
from services.decoding.prefix_cache import PrefixCache
from services.decoding.requests import SegmentRequest
from services.decoding.roomy_cache import ROOM, roomy_cache
from services.decoding.tokens import TokenTable
from services.tasks import toy

MODELS = Path(__file__).resolve().parents[3] / "models"


@pytest.fixture(scope="module")
def model() -> tuple[object, TokenTable, int]:
    tokenizer = AutoTokenizer.from_pretrained(MODELS / "strong")
    loaded = AutoModelForCausalLM.from_pretrained(MODELS / "strong").eval()
    table = TokenTable.of_model(tokenizer, loaded)
    return loaded, table, table.pad_id(tokenizer)


def _prompts(count: int) -> list[tuple[int, ...]]:
    tokenizer = AutoTokenizer.from_pretrained(MODELS / "strong")
    return [tuple(tokenizer.encode(toy.format_prompt(p.question))) for p in toy.generate("test", count)]


def _batch(model: tuple[object, TokenTable, int], cache: PrefixCache | None = None) -> DecodingBatch:
    loaded, table, pad_id = model
    return DecodingBatch(
        loaded, pieces=table.pieces, eos_ids=table.eos_ids, pad_id=pad_id,  # type: ignore[arg-type]
        context_window=table.context_window, prefix_cache=cache,
    )  # fmt: skip


def _fresh(model: tuple[object, TokenTable, int], request: SegmentRequest) -> Generated:
    """The segment written alone, from a full prefill of its prefix."""
    loaded, table, pad_id = model
    return generate(
        loaded, [request], pieces=table.pieces, eos_ids=table.eos_ids, pad_id=pad_id,  # type: ignore[arg-type]
        context_window=table.context_window,
    )[0]  # fmt: skip


RULES = {
    "word": StopRule(10, Boundary.WORD),  # ends on a lookahead: every kept token was fed
    "three tokens": StopRule(3, Boundary.NONE),  # ends on a kept token that was never fed
}


@pytest.mark.parametrize("rule", RULES.values(), ids=RULES.keys())
def test_segments_continued_in_the_batch_are_those_of_fresh_prefills(
    model: tuple[object, TokenTable, int], rule: StopRule
) -> None:
    """Six texts of five seeded segments each, every segment continued in the batch; rows end at different steps,
    so some continue while others decode. Each segment equals the one a fresh prefill of its text writes."""
    batch = _batch(model)
    texts: dict[Hashable, tuple[int, ...]] = dict(enumerate(_prompts(6)))
    segments = dict.fromkeys(texts, 0)

    def request(key: Hashable) -> SegmentRequest:
        return SegmentRequest(texts[key], rule, 3.0, seed=1000 * int(key) + segments[key])  # type: ignore[call-overload]

    ended = batch.step(join=[(key, request(key)) for key in texts])
    checked = 0
    while len(batch):
        resume, drop = [], []
        for key, got in ended:
            want = _fresh(model, request(key))
            assert got.token_ids == want.token_ids, (key, segments[key])
            assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)
            checked += 1
            texts[key] += tuple(got.token_ids)
            segments[key] += 1
            if segments[key] == 5 or got.eos_id is not None:
                drop.append(key)
            else:
                resume.append((key, request(key)))
        ended = batch.step(resume=resume, drop=drop)
    assert checked >= 6 * 3  # most rows continued several times (at T 3 some end at EOS early)
    assert batch.forward_passes < checked * 3  # one batch of forward passes, not a decoding loop per segment


def test_rows_that_leave_come_back_through_the_prefix_cache(model: tuple[object, TokenTable, int]) -> None:
    """Rows leave after each segment, a few tokens are added as the other author would, and they join again (with
    new rows joining midway): each finds its states in the prefix cache and writes what a fresh prefill writes."""
    cache = PrefixCache()
    batch = _batch(model, cache)
    prompts = _prompts(8)
    texts: dict[Hashable, tuple[int, ...]] = dict(enumerate(prompts[:5]))
    rule = StopRule(8, Boundary.WORD)
    rounds = dict.fromkeys(range(8), 0)

    def request(key: int) -> SegmentRequest:
        return SegmentRequest(texts[key], rule, 3.0, seed=10 * key + rounds[key])

    waiting, leave, step = list(texts), [], 0
    while waiting or len(batch) or step <= 6:
        if step == 6:  # newcomers, with nothing cached, join rows that find theirs
            texts.update({key: prompts[key] for key in (5, 6, 7)})
            waiting += [5, 6, 7]
        ended = batch.step(join=[(key, request(key)) for key in waiting], leave=leave)
        waiting, leave, step = [], [], step + 1
        for key, got in ended:
            assert got.token_ids == _fresh(model, request(key)).token_ids
            rounds[key] += 1
            texts[key] += (*got.token_ids, texts[key][-1])  # the "other author" repeats a token
            leave.append(key)
            if rounds[key] < 4 and got.eos_id is None:
                waiting.append(key)
    assert sum(rounds.values()) >= 8 * 3
    assert cache.stats.hits >= 8 * 2 and cache.stats.reused_share > 0.6


def test_a_paused_row_must_be_decided_and_only_a_paused_row_resumes(model: tuple[object, TokenTable, int]) -> None:
    batch = _batch(model)
    prompt = _prompts(1)[0]
    first = SegmentRequest(prompt, StopRule(1, Boundary.NONE), 0.0)
    with pytest.raises(ValueError, match="keys new to the batch"):
        batch.step(join=[("a", first), ("a", first)])
    [(key, got)] = batch.step(join=[("a", first)])
    assert key == "a" and len(got.token_ids) == 1
    with pytest.raises(ValueError, match="resume them or let them leave"):
        batch.step()
    with pytest.raises(ValueError, match="does not extend"):
        batch.step(resume=[("a", SegmentRequest(prompt[:-1], StopRule(2), 0.0))])
    with pytest.raises(ValueError, match="not paused"):
        batch.step(resume=[("b", first)])
    batch.step(resume=[("a", SegmentRequest(prompt + tuple(got.token_ids), StopRule(5), 0.0))])
    with pytest.raises(ValueError, match="not paused"):
        batch.step(resume=[("a", SegmentRequest(prompt, StopRule(5), 0.0))])
    with pytest.raises(KeyError, match="no rows"):
        batch.step(leave=["zzz"])


def test_the_roomy_cache_gives_the_logits_of_transformers_own(model: tuple[object, TokenTable, int]) -> None:
    """Past its room (the buffer is reallocated midway), with rows dropped on the way."""
    loaded, _, _ = model
    prompts = torch.tensor([p[:40] for p in _prompts(4)])
    with torch.inference_mode():
        out = loaded(input_ids=prompts, use_cache=True)  # type: ignore[operator]
        states = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        caches = {"plain": DynamicCache(ddp_cache_data=states), "roomy": roomy_cache(states)}
        logits: dict[str, list[torch.Tensor]] = {name: [] for name in caches}
        for step in range(ROOM + 10):
            rows = 4 if step < 20 else 2
            if step == 20:
                for cache in caches.values():
                    cache.batch_select_indices(torch.tensor([0, 2]))
            for name, cache in caches.items():
                step_out = loaded(  # type: ignore[operator]
                    input_ids=torch.full((rows, 1), 5 + step % 9), position_ids=torch.full((rows, 1), 40 + step),
                    past_key_values=cache, use_cache=True,
                )  # fmt: skip
                logits[name].append(step_out.logits[:, -1])
    for plain, roomy in zip(logits["plain"], logits["roomy"], strict=True):
        assert torch.equal(plain, roomy)


def test_rows_leave_without_copying_the_batch_until_half_its_slots_are_idle(
    model: tuple[object, TokenTable, int],
) -> None:
    batch = _batch(model)
    prompts = _prompts(6)
    one_token = StopRule(1, Boundary.NONE)
    ended = batch.step(join=[(i, SegmentRequest(p, one_token, 0.0)) for i, p in enumerate(prompts)])
    assert len(ended) == 6 and len(batch) == 6

    def buffer() -> object:
        return batch._cache.layers[0]._key_buffer  # type: ignore[union-attr]

    def resume(keys: list[int]) -> list[tuple[int, SegmentRequest]]:
        return [(k, SegmentRequest(prompts[k] + tuple(dict(ended)[k].token_ids), StopRule(50), 0.0)) for k in keys]

    before = buffer()
    batch.step(resume=resume([2, 3, 4, 5]), leave=[0, 1])  # 2 of 6 slots idle: they sit the step out
    assert len(batch) == 4 and batch.running == 4 and buffer() is before
    batch.step(leave=[2])  # 3 of 6 idle: one copy of the 3 rows left
    assert len(batch) == 3 and batch._cache.layers[0].keys.shape[0] == 3  # type: ignore[union-attr]
