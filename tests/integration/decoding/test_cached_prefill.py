"""Decoding from cached KV states gives what a full prefill gives, on the bundled model, segment after segment."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.decoding.boundaries import Boundary, StopRule
from services.decoding.hf_loop import Generated, generate
from services.decoding.prefix_cache import PrefixCache
from services.decoding.requests import SegmentRequest
from services.decoding.tokens import TokenTable
from services.tasks import toy

MODELS = Path(__file__).resolve().parents[3] / "models"


def test_segments_decoded_from_the_cache_match_full_prefills() -> None:
    tokenizer = AutoTokenizer.from_pretrained(MODELS / "strong")
    model = AutoModelForCausalLM.from_pretrained(MODELS / "strong").eval()
    table = TokenTable.of_model(tokenizer, model)

    def write(requests: list[SegmentRequest], cache: PrefixCache | None) -> list[Generated]:
        return generate(
            model, requests, pieces=table.pieces, eos_ids=table.eos_ids, pad_id=table.pad_id(tokenizer),
            context_window=table.context_window, prefix_cache=cache,
        )  # fmt: skip

    prompts = [tuple(tokenizer.encode(toy.format_prompt(p.question))) for p in toy.generate("test", 6)]
    cache = PrefixCache()
    texts = {False: list(prompts), True: list(prompts)}
    fresh = [tuple(tokenizer.encode(toy.format_prompt(p.question))) for p in toy.generate("test", 8)[6:]]
    for segment in range(4):
        if segment == 2:  # rows with nothing cached join rows that find theirs: one batch, prefilled in two parts
            texts = {cached: [*texts[cached], *fresh] for cached in (False, True)}
        # Words from the model, then (as the other author would) a few tokens of our own, sampled with seeds.
        rule = StopRule(12, Boundary.WORD)
        written = {}
        for cached in (False, True):
            requests = [SegmentRequest(t, rule, 1.0, seed=100 * segment + i) for i, t in enumerate(texts[cached])]
            written[cached] = write(requests, cache if cached else None)
            texts[cached] = [
                t + tuple(g.token_ids) + tuple(t[-3:]) for t, g in zip(texts[cached], written[cached], strict=True)
            ]
        assert [g.token_ids for g in written[True]] == [g.token_ids for g in written[False]]
        for mine, theirs in zip(written[True], written[False], strict=True):
            assert mine.logprobs == pytest.approx(theirs.logprobs, abs=1e-4)
    assert texts[True] == texts[False]
    # From its second segment on, every row found its previous segment's states: most of each prefix was reused.
    assert cache.stats.lookups == 6 + 6 + 8 + 8 and cache.stats.hits == 6 + 6 + 8
    assert cache.stats.reused_share > 0.6
