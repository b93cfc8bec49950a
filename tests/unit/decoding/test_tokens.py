"""Tokenizer facts of any checkpoint (GPT-2 toy, Llama, Qwen2) and the tokenizer fingerprint.

The fingerprint decides whether two models may hand token ids to each other, so it must tell different
vocabularies or special tokens apart and agree for the same tokenizer however it was loaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedTokenizerFast

from services.common.bundled_models import BUNDLED_STRONG, BUNDLED_WEAK
from services.decoding.tokens import TokenTable, context_window, tokenizer_sha256
from tests.support.checkpoints import CONTEXT_WINDOW, train_tokenizer


def test_the_same_tokenizer_has_the_same_fingerprint_however_it_is_loaded(tmp_path: Path) -> None:
    built = train_tokenizer("llama")
    built.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer_sha256(built) == tokenizer_sha256(loaded) == tokenizer_sha256(train_tokenizer("llama"))
    assert re.fullmatch(r"[0-9a-f]{64}", tokenizer_sha256(loaded))


def test_llama_qwen2_and_the_bundled_tokenizer_have_three_fingerprints(
    own_checkpoint: Callable[[str, str], Path],
) -> None:
    hashes = {
        name: tokenizer_sha256(AutoTokenizer.from_pretrained(path))
        for name, path in [
            ("llama", own_checkpoint("llama", "causal")),
            ("qwen2", own_checkpoint("qwen2", "causal")),
            ("weak", BUNDLED_WEAK),
            ("strong", BUNDLED_STRONG),
        ]
    }
    assert len({hashes["llama"], hashes["qwen2"], hashes["weak"]}) == 3
    assert hashes["weak"] == hashes["strong"]  # the bundled weak and strong models share one tokenizer
    # A causal LM and a classifier of one family are built with the same tokenizer.
    classifier = AutoTokenizer.from_pretrained(own_checkpoint("llama", "classifier"))
    assert tokenizer_sha256(classifier) == hashes["llama"]


def test_special_tokens_alone_change_the_fingerprint() -> None:
    tokenizer = train_tokenizer("qwen2")
    before = tokenizer_sha256(tokenizer)
    vocab_before = tokenizer.get_vocab()
    tokenizer.eos_token = "<|endoftext|>"  # an existing token: same vocabulary, another EOS
    assert tokenizer.get_vocab() == vocab_before
    assert tokenizer_sha256(tokenizer) != before


def test_one_more_token_changes_the_fingerprint() -> None:
    tokenizer: PreTrainedTokenizerFast = train_tokenizer("qwen2")
    before = tokenizer_sha256(tokenizer)
    assert tokenizer.add_tokens(["<think>"]) == 1
    assert tokenizer_sha256(tokenizer) != before


@pytest.mark.parametrize(
    ("family", "eos", "bos", "pad"),
    [
        ("llama", "</s>", "<s>", "</s>"),
        ("qwen2", "<|im_end|>", "<|im_end|>", "<|endoftext|>"),  # no BOS: an empty context starts after EOS
    ],
)
def test_token_table_takes_eos_bos_and_the_window_from_the_checkpoint(
    own_checkpoint: Callable[[str, str], Path], family: str, eos: str, bos: str, pad: str
) -> None:
    path = own_checkpoint(family, "causal")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    table = TokenTable.of_model(tokenizer, model)
    ids = tokenizer.convert_tokens_to_ids
    assert table.eos_ids == frozenset({ids(eos)})
    assert table.bos_id == ids(bos)
    assert table.pad_id(tokenizer) == ids(pad)
    assert table.context_window == CONTEXT_WINDOW == 512
    assert table.vocab_size == len(tokenizer) == len(table.pieces) == 400
    assert table.pieces[ids(eos)] == eos  # special tokens keep their text: boundaries see them as they are
    assert table.tokenizer_sha256 == tokenizer_sha256(tokenizer)


def test_the_gpt2_window_comes_from_n_positions() -> None:
    config = AutoConfig.from_pretrained(BUNDLED_WEAK)
    assert config.model_type == "gpt2"
    assert context_window(config, AutoTokenizer.from_pretrained(BUNDLED_WEAK)) == config.n_positions == 192


def test_extra_generation_eos_ids_end_too(own_checkpoint: Callable[[str, str], Path]) -> None:
    path = own_checkpoint("qwen2", "causal")
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    endoftext, im_end = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_end|>"])
    # Qwen2-Instruct's generation config lists both; the tokenizer's EOS is always one of them.
    table = TokenTable.build(tokenizer, config, [endoftext], config.vocab_size)
    assert table.eos_ids == frozenset({endoftext, im_end})
    assert TokenTable.build(tokenizer, config, None, config.vocab_size).eos_ids == frozenset({im_end})


def test_the_window_is_the_configs_and_the_tokenizers_only_without_one() -> None:
    tokenizer = train_tokenizer("llama")
    tokenizer.model_max_length = 256
    assert context_window(LlamaConfig(max_position_embeddings=1024), tokenizer) == 1024
    assert context_window(SimpleNamespace(), tokenizer) == 256
    tokenizer.model_max_length = int(1e30)  # transformers' "no limit" placeholder
    with pytest.raises(ValueError, match="cannot tell the context window"):
        context_window(SimpleNamespace(), tokenizer)
