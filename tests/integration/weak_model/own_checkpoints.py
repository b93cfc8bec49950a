"""Cases and checks for the weak model serving your own checkpoints (the Llama and Qwen2 fixtures of
tests/support/checkpoints.py): a direct transformers reference, prefixes chosen so that every finish reason occurs,
and the check of a served continuation against :func:`services.decoding.boundaries.find_end`.

The fixture models have random weights, so which prefixes reach a sentence end or a newline is found by greedy
decoding with the reference model (deterministic: the checkpoints are built from a fixed seed), not guessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from services.common.genproto.legibility.v1 import common_pb2, weak_model_pb2
from services.decoding.boundaries import Boundary, FinishReason, StopRule, find_end
from services.decoding.tokens import DECODE
from services.tasks.toy import format_prompt, generate

B = weak_model_pb2
MAX_NEW = 24
"""max_new_tokens of the rule cases; reference streams are one token longer (the WORD/SENTENCE lookahead)."""
REASONS = {
    FinishReason.BOUNDARY: B.FINISH_REASON_BOUNDARY,
    FinishReason.STOP_STRING: B.FINISH_REASON_STOP_STRING,
    FinishReason.LENGTH: B.FINISH_REASON_LENGTH,
    FinishReason.EOS: B.FINISH_REASON_EOS,
}
WIRE_BOUNDARY = {
    Boundary.NONE: B.BOUNDARY_NONE,
    Boundary.WORD: B.BOUNDARY_WORD,
    Boundary.SENTENCE: B.BOUNDARY_SENTENCE,
    Boundary.STEP: B.BOUNDARY_STEP,
}
TEXTS = [format_prompt(problem.question) for problem in generate("test", 3)] + [
    "Ann has 4 bags of 7 pens. She gets 3 more. How many pens now?\n4*7=28.",
    "Omar packs 36/3 = <<36/3=12>>12 jars on Tuesday.\n",
]


@dataclass(frozen=True)
class Case:
    prefix: str | tuple[int, ...]
    rule: StopRule

    def item(self) -> weak_model_pb2.ContinueItem:
        return continue_item(self.prefix, self.rule)


def prefix_value(prefix: str | Sequence[int]) -> common_pb2.TextOrTokens:
    if isinstance(prefix, str):
        return common_pb2.TextOrTokens(text=prefix)
    return common_pb2.TextOrTokens(token_ids=common_pb2.TokenIds(ids=list(prefix)))


def continue_item(prefix: str | Sequence[int], rule: StopRule, **fields: object) -> weak_model_pb2.ContinueItem:
    return B.ContinueItem(
        prefix=prefix_value(prefix),
        max_new_tokens=rule.max_new_tokens,
        boundary=WIRE_BOUNDARY[rule.boundary],
        stop=list(rule.stop),
        **fields,  # type: ignore[arg-type]
    )


@dataclass
class Reference:
    """A checkpoint loaded directly with transformers: what the served results are compared with."""

    path: Path
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    eos_id: int
    start: list[int] = field(default_factory=list)
    """What the tokenizer puts before a text (Llama: BOS; Qwen2: nothing)."""

    @classmethod
    def load(cls, path: Path) -> Reference:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        start = tokenizer.encode("a")[: -len(tokenizer.encode("a", add_special_tokens=False))]
        return cls(path, model, tokenizer, int(tokenizer.eos_token_id), start)

    def prefix_ids(self, prefix: str | Sequence[int]) -> list[int]:
        """The ids the service continues: a text gets the tokenizer's special tokens, ids are taken as they are."""
        return self.tokenizer.encode(prefix) if isinstance(prefix, str) else list(prefix)

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.tokenizer.decode([i], **DECODE) for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), **DECODE))

    @torch.no_grad()
    def greedy(self, prefixes: Sequence[Sequence[int]], steps: int) -> list[tuple[list[int], bool]]:
        """Greedy tokens after each prefix (equal lengths: one batch, no padding), cut before the first EOS;
        and whether EOS ended them. transformers' own KV cache, not the service's loop."""
        ids = torch.tensor([list(p) for p in prefixes], dtype=torch.long)
        out = self.model(input_ids=ids, use_cache=True)
        tokens = []
        for _ in range(steps):
            tokens.append(out.logits[:, -1].argmax(-1, keepdim=True))
            out = self.model(input_ids=tokens[-1], past_key_values=out.past_key_values, use_cache=True)
        streams = []
        for row in torch.cat(tokens, dim=1).tolist():
            ended = self.eos_id in row
            streams.append((row[: row.index(self.eos_id)] if ended else row, ended))
        return streams

    @torch.no_grad()
    def logprobs(self, context: Sequence[int], text: Sequence[int]) -> list[float]:
        """Log-probs of ``text`` after ``context`` from one unpadded forward pass."""
        logits = self.model(input_ids=torch.tensor([list(context) + list(text)])).logits[0].float()
        steps = torch.log_softmax(logits[len(context) - 1 : -1], dim=-1)
        return steps.gather(-1, torch.tensor(list(text))[:, None])[:, 0].tolist()


def _stop_string(reference: Reference, stream: list[int]) -> str | None:
    """A stop string the stream holds: the first printable ASCII token text after its second token, if any."""
    for piece in reference.pieces(stream)[2:]:
        if piece.strip() and piece.isascii() and piece.isprintable():
            return piece.strip()
    return None


def rule_cases(reference: Reference) -> list[Case]:
    """Text and token-id prefixes that reach every finish reason: each boundary's cut, a stop string, length, EOS.

    Every text prefix goes with every rule; single-token id prefixes are added where their greedy stream ends
    at a sentence, a step, a word or EOS within MAX_NEW tokens.
    """
    steps = MAX_NEW + 1
    text_streams = [reference.greedy([reference.prefix_ids(t)], steps)[0] for t in TEXTS]
    singles = [(*reference.start, t) for t in range(len(reference.tokenizer))]
    single_streams = reference.greedy(singles, steps)
    cases: list[Case] = []
    for text, (stream, _) in zip(TEXTS, text_streams, strict=True):
        cases += [Case(text, StopRule(MAX_NEW, boundary)) for boundary in Boundary]
        if (stop := _stop_string(reference, stream)) is not None:
            cases.append(Case(text, StopRule(MAX_NEW, Boundary.NONE, ("\n\n\n", stop))))
        cases.append(Case(text, StopRule(3)))
    wanted = [
        (StopRule(MAX_NEW, Boundary.SENTENCE), FinishReason.BOUNDARY),
        (StopRule(MAX_NEW, Boundary.STEP), FinishReason.BOUNDARY),
        (StopRule(MAX_NEW, Boundary.WORD), FinishReason.BOUNDARY),
        (StopRule(MAX_NEW, Boundary.NONE), FinishReason.EOS),
    ]
    for rule, reason in wanted:
        found = [
            prefix
            for prefix, (stream, eos) in zip(singles, single_streams, strict=True)
            if find_end(reference.pieces(stream), rule, eos=eos).reason is reason
        ]
        assert found, f"no single-token prefix reaches {reason} under {rule}"
        cases += [Case(prefix, rule) for prefix in found[:2]]
    return cases


def check_cut(
    reference: Reference,
    case: Case,
    got: weak_model_pb2.ContinueResult,
    stream: weak_model_pb2.ContinueResult,
) -> FinishReason:
    """``got`` (the case's result) is ``stream`` (the same prefix, no rule, MAX_NEW + 1 tokens) cut where
    find_end cuts it; its text is its ids decoded; no EOS among its ids. Returns the finish reason."""
    ended_by_eos = stream.finish_reason == B.FINISH_REASON_EOS
    ending = find_end(reference.pieces(stream.token_ids), case.rule, eos=ended_by_eos)
    assert list(got.token_ids) == list(stream.token_ids[: ending.kept]), case
    assert (got.finish_reason, got.matched_stop) == (REASONS[ending.reason], ending.matched_stop), case
    assert got.text == reference.decode(got.token_ids), case
    assert reference.eos_id not in got.token_ids, case
    assert list(got.logprobs) == pytest.approx(list(stream.logprobs[: ending.kept]), abs=1e-4), case
    assert got.prefix_tokens == len(reference.prefix_ids(case.prefix)), case
    return ending.reason


def stream_item(case: Case) -> weak_model_pb2.ContinueItem:
    """The reference stream of a case's prefix: no boundary, no stop strings, one token past MAX_NEW."""
    return continue_item(case.prefix, StopRule(MAX_NEW + 1))
