"""Random-initialised Llama and Qwen2 checkpoints made here, with no download: "your own model" in tests (``tiny``),
and a model of real shape for throughput on a GPU (``qwen2-0.5b``: Qwen2-0.5B's layers, widths and heads).

A byte-level BPE tokenizer is trained locally with ``tokenizers`` on toy and GSM8K-style text, wrapped as a
transformers fast tokenizer with a ChatML chat template; random-initialised models (causal LM and sequence
classification with one label) of the Llama and Qwen2 families are saved beside it, as ``save_pretrained`` writes
them (safetensors). Heads are 64 wide, as in the real families, so vLLM's CPU kernels take them as they are.

The two families differ where real checkpoints differ, so code that hard-codes a special token fails on one:

- ``qwen2``: no BOS, EOS ``<|im_end|>``, PAD ``<|endoftext|>`` (as Qwen2-Instruct);
- ``llama``: BOS ``<s>`` prepended by the tokenizer, EOS ``</s>``, PAD = EOS (as many Llama fine-tunes).

The tokenizer's vocabulary is small (400 tokens, not Qwen2's 151,936): a ``qwen2-0.5b`` body computes what the real
one does per token, but its embedding and LM head are smaller, so its weights are ~360 M parameters, not 494 M.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
)

from services.tasks import toy
from services.tasks.styles import render

Family = Literal["llama", "qwen2"]
Kind = Literal["causal", "classifier"]
Shape = Literal["tiny", "qwen2-0.5b"]

SHAPES: dict[Shape, dict[str, int]] = {
    "tiny": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2},
    # Qwen2-0.5B's config.json: 24 layers, hidden 896, MLP 4864, 14 query heads of 64 over 2 key-value heads.
    "qwen2-0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14},
}
KV_HEADS: dict[Shape, dict[Family, int]] = {"tiny": {"llama": 2, "qwen2": 1}, "qwen2-0.5b": {"llama": 2, "qwen2": 2}}

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CONTEXT_WINDOW = 512


@dataclass(frozen=True)
class SpecialTokens:
    bos: str | None
    eos: str
    pad: str


SPECIALS: dict[Family, SpecialTokens] = {
    "qwen2": SpecialTokens(bos=None, eos="<|im_end|>", pad="<|endoftext|>"),
    "llama": SpecialTokens(bos="<s>", eos="</s>", pad="</s>"),
}


def _corpus(count: int = 400) -> list[str]:
    """Toy problems with plain and jargon solutions, and a few GSM8K-style lines: what the tokenizer learns from."""
    lines = []
    for problem in toy.generate("train", count, seed=11):
        lines.append(problem.question)
        lines.append(render(problem, "plain"))
        lines.append(render(problem, "jargon"))
    lines += [
        "Omar packs 36 jars on Monday and a third as many on Tuesday. How many jars does he pack?",
        "Omar packs 36/3 = <<36/3=12>>12 jars on Tuesday.\nHe packs 36+12 = <<36+12=48>>48 jars.\n#### 48",
        "What is $\\frac{1}{2} + \\frac{1}{3}$? The answer is $\\boxed{\\frac{5}{6}}$.",
    ]
    return lines


def train_tokenizer(family: Family, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained here, with the family's special tokens and a ChatML chat template."""
    specials = SPECIALS[family]
    special_tokens = [t for t in dict.fromkeys([specials.pad, specials.eos, "<|im_start|>", "<|im_end|>"])]
    if specials.bos is not None:
        special_tokens.insert(0, specials.bos)
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_corpus(), trainer)
    if specials.bos is not None:
        bos_id = core.token_to_id(specials.bos)
        core.post_processor = processors.TemplateProcessing(
            single=f"{specials.bos} $A",
            pair=f"{specials.bos} $A {specials.bos} $B",
            special_tokens=[(specials.bos, bos_id)],
        )
    else:
        core.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=specials.bos,
        eos_token=specials.eos,
        pad_token=specials.pad,
        chat_template=CHATML_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=CONTEXT_WINDOW,
    )


def _config(
    family: Family, tokenizer: PreTrainedTokenizerFast, kind: Kind, shape: Shape = "tiny"
) -> LlamaConfig | Qwen2Config:
    common = {
        "vocab_size": len(tokenizer),
        **SHAPES[shape],
        "head_dim": 64,
        "max_position_embeddings": CONTEXT_WINDOW,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
    }
    if kind == "classifier":
        common["num_labels"] = 1
    if family == "llama":
        return LlamaConfig(num_key_value_heads=KV_HEADS[shape][family], **common)
    return Qwen2Config(num_key_value_heads=KV_HEADS[shape][family], **common)


_CLASSES = {
    ("llama", "causal"): LlamaForCausalLM,
    ("llama", "classifier"): LlamaForSequenceClassification,
    ("qwen2", "causal"): Qwen2ForCausalLM,
    ("qwen2", "classifier"): Qwen2ForSequenceClassification,
}


def build_checkpoint(folder: Path, family: Family, kind: Kind, seed: int = 0, shape: Shape = "tiny") -> Path:
    """Save a random-initialised ``family`` model of ``kind`` and ``shape`` and its tokenizer in ``folder``."""
    tokenizer = train_tokenizer(family)
    torch.manual_seed(seed)
    random.seed(seed)
    model = _CLASSES[(family, kind)](_config(family, tokenizer, kind, shape))
    # Random weights give near-uniform logits; a larger init makes sampling and scores less flat, like a real model.
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.08)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if kind == "causal":
        GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ).save_pretrained(folder)
    return folder
