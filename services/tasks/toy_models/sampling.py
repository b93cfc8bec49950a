"""Batched generation of solutions from a causal LM (left-padded, KV-cached via ``generate``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerFast


class _BanAtFirstStep(LogitsProcessor):
    def __init__(self, token_ids: list[int]) -> None:
        self.token_ids = token_ids
        self.prompt_length: int | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        if input_ids.shape[1] == self.prompt_length:
            scores[:, self.token_ids] = -float("inf")
        return scores


@torch.inference_mode()
def complete(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 256,
    stop_at_newline: bool = False,
    banned_first_tokens: Sequence[str] = (),
) -> list[str]:
    """Continuations of each prompt (without the prompt), greedy when temperature is 0.

    stop_at_newline ends each continuation after its first newline: one step, for step-wise handoff.
    banned_first_tokens may not start a continuation (e.g. ``<`` forces a plain-style first step).
    """
    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    eos = [tokenizer.eos_token_id]
    if stop_at_newline:
        eos.append(tokenizer.convert_tokens_to_ids("\n"))
    extra = {}
    if banned_first_tokens:
        banned = tokenizer.convert_tokens_to_ids(list(banned_first_tokens))
        extra["logits_processor"] = LogitsProcessorList([_BanAtFirstStep(banned)])
    outputs: list[str] = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(list(prompts[start : start + batch_size]), return_tensors="pt", padding=True)
        generated = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_k=0 if temperature > 0 else None,
            top_p=None,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
            **extra,
        )
        new_tokens = generated[:, batch["input_ids"].shape[1] :]
        outputs += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return outputs
