"""The character-level tokenizer shared by the weak, strong and verifier models.

One token per printable ASCII character (plus newline), so token-level handoff between models is exact and a
boundary (word, sentence, step) always falls between two tokens. Saved as a standard ``tokenizer.json`` that
``AutoTokenizer`` and vLLM load.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
PAD = "<|pad|>"
CHARACTERS = "\n" + "".join(chr(c) for c in range(32, 127))


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A fast tokenizer: ids 0 and 1 are EOS and PAD, then one id per character."""
    vocab = {EOS: 0, PAD: 1} | {ch: i + 2 for i, ch in enumerate(CHARACTERS)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None, fuse_unk=False))
    # Every character is its own pre-token, so no merges and no byte-level mapping are involved.
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token=EOS, bos_token=EOS, pad_token=PAD, clean_up_tokenization_spaces=False
    )
    tokenizer.padding_side = "left"  # generation batches are left-padded
    return tokenizer


def save_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(folder)
    return tokenizer
