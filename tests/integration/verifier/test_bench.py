"""``legibility bench verifier`` with tiny bounds: raw forward passes, then the service in a subprocess, every level."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from services.tools.bench_progress import BenchProgress
from services.tools.bench_verifier import BenchConfig, Row, draw, run_bench, stage_count, table, to_json


@pytest.mark.slow
async def test_every_row_measures_scores_per_second_and_a_ratio_to_raw(tmp_path: Path) -> None:
    config = BenchConfig(requests=40, duration_s=5.0, vllm=False)
    with BenchProgress("bench verifier", stage_count(config)) as progress:
        raw, rows = await run_bench(config)
    levels = ["service, 1 x 1", "service, 8 x 1", "service, 64 x 1", "service, 64 x 8"]
    assert progress.done == ["raw forward passes", "starting the service (hf engine)", *levels]
    assert stage_count(config) == len(progress.done)
    assert stage_count(dataclasses.replace(config, engine="vllm", vllm=True)) == len(progress.done) + 1 + 1 + 2 * 2
    saved = json.loads(json.dumps(to_json(config, raw, rows)))
    assert [r["mode"] for r in saved["rows"]] == ["raw forward"] + ["service gRPC Score"] * 4
    assert saved["rows"][0]["ratio_vs_raw"] is None
    assert saved["rows"][3]["ratio_vs_raw"] == pytest.approx(rows[2].scores_per_s / raw.scores_per_s, abs=1e-3)
    draw(raw, rows, tmp_path / "bench.png", "bench")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert raw.scores_per_s is not None and raw.scores_per_s > 0
    assert [(r.clients, r.items_per_request) for r in rows] == [(1, 1), (8, 1), (64, 1), (64, 8)]
    for row in rows:
        assert row.failed == 0
        assert row.scores_per_s is not None and row.scores_per_s > 0
    rendered = table(raw, rows, "bench")
    ratios = rendered.columns[4]._cells
    assert ratios[0] == "" and all(float(cell) > 0 for cell in ratios[1:])


def test_a_skipped_row_prints_its_reason() -> None:
    raw = Row("raw forward", 1, 64, 100.0)
    skipped = Row("vLLM /classify ids", 64, 1, None, note="skipped (no vllm)")
    rendered = table(raw, [skipped], "bench")
    assert rendered.columns[3]._cells == ["100", "-"]
    assert rendered.caption == "skipped (no vllm)"


def test_forward_in_length_sorted_chunks_returns_each_score_in_request_order() -> None:
    """model.forward splits a micro-batch into length-sorted chunks (the speed-up the bench measured)."""
    from services.tools.bench_verifier import bench_pairs
    from services.verifier.model import load_verifier
    from services.verifier.scorers import FORWARD_TOKENS, length_chunks
    from tests.integration.verifier.conftest import VERIFIER_MODEL

    model = load_verifier(VERIFIER_MODEL, hf_worker="thread")
    pairs = bench_pairs()[:29]  # chunks of mixed lengths and counts
    lengths = [len(model.verifier_input.ids(*pair)) for pair in pairs]
    assert len({len(c) for c in length_chunks(lengths, FORWARD_TOKENS["cpu"])}) == 2  # 7 and 8 rows: 4 chunks
    alone = [model.forward([pair])[0] for pair in pairs]
    together = model.forward(pairs)
    assert together == pytest.approx(alone, abs=1e-5)
    assert len(set(together)) > len(pairs) // 2  # distinct pairs, distinct scores: not one chunk's copied


def test_classify_text_is_sent_only_where_it_tokenises_back_to_our_ids(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from services.tools.bench_verifier import as_texts

    # A byte-level BPE tokenizer (GPT-2's kind) that has learnt "hello" as one token.
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=alphabet)
    bpe.train_from_iterator(["hello world, hello"] * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    tokenizer.save_pretrained(tmp_path)

    ids = [*tokenizer("hello 4*7=28", add_special_tokens=False).input_ids, tokenizer.eos_token_id]
    assert as_texts(tmp_path, [ids]) == ["hello 4*7=28<|endoftext|>"]  # the EOS read-out written out, not added
    spelt = tokenizer.convert_tokens_to_ids(list("hello"))  # decodes to "hello", which tokenises to one id
    assert len(tokenizer("hello", add_special_tokens=False).input_ids) == 1
    assert as_texts(tmp_path, [ids, spelt]) is None
