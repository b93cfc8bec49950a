"""Request validation: every bad input becomes InvalidArgument naming the item and field, before any model work.

Messages look like ``items[2].max_new_tokens: must be between 1 and 256``. Text is tokenised here (the engine's
tokenizer), so length limits are checked in tokens, the unit the model counts in.
"""

from __future__ import annotations

import math
from typing import Protocol

from services.common.errors import InvalidArgument
from services.common.genproto.legibility.v1 import common_pb2, weak_model_pb2
from services.decoding.boundaries import Boundary, StopRule
from services.decoding.requests import SegmentRequest
from services.weak_model.engine import LogProbsRequest

BOUNDARIES = {
    weak_model_pb2.BOUNDARY_UNSPECIFIED: Boundary.NONE,
    weak_model_pb2.BOUNDARY_NONE: Boundary.NONE,
    weak_model_pb2.BOUNDARY_WORD: Boundary.WORD,
    weak_model_pb2.BOUNDARY_SENTENCE: Boundary.SENTENCE,
    weak_model_pb2.BOUNDARY_STEP: Boundary.STEP,
}


class Vocabulary(Protocol):
    """What validation needs from an engine."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def context_window(self) -> int: ...

    @property
    def max_text_chars(self) -> int:
        """Texts longer than this cannot fit the context window: refused before tokenising."""
        ...

    def encode(self, text: str, *, add_special_tokens: bool) -> list[int]: ...


def _check_batch(count: int, max_items: int) -> None:
    if count == 0:
        raise InvalidArgument("items", "must not be empty")
    if count > max_items:
        raise InvalidArgument("items", f"at most {max_items} items per request, got {count}")


def _token_ids(value: common_pb2.TextOrTokens, field: str, vocab: Vocabulary, *, add_special_tokens: bool) -> list[int]:
    """The ids of a text-or-tokens field (empty when unset); ids outside the vocabulary are refused."""
    kind = value.WhichOneof("kind")
    if kind == "text":
        if not value.text:
            return []
        if len(value.text) > (limit := vocab.max_text_chars):
            raise InvalidArgument(
                f"{field}.text",
                f"{len(value.text)} characters cannot fit the {vocab.context_window}-token context window "
                f"(at most {limit})",
            )
        ids = vocab.encode(value.text, add_special_tokens=add_special_tokens)
        if not ids:
            raise InvalidArgument(f"{field}.text", "has no tokens the weak model knows")
        return ids
    if kind == "token_ids":
        for j, token in enumerate(value.token_ids.ids):
            if not 0 <= token < vocab.vocab_size:
                raise InvalidArgument(
                    f"{field}.token_ids[{j}]", f"{token} is outside the vocabulary (0..{vocab.vocab_size - 1})"
                )
        return list(value.token_ids.ids)
    return []


def validate_continue(
    request: weak_model_pb2.ContinueRequest, vocab: Vocabulary, *, max_new_tokens_cap: int, max_items: int
) -> list[SegmentRequest]:
    """Engine requests for a valid Continue request; raises InvalidArgument on the first bad field."""
    _check_batch(len(request.items), max_items)
    requests = []
    for i, item in enumerate(request.items):
        field = f"items[{i}]"
        prefix = _token_ids(item.prefix, f"{field}.prefix", vocab, add_special_tokens=True)
        if not prefix:
            raise InvalidArgument(f"{field}.prefix", "must not be empty")
        if not 1 <= item.max_new_tokens <= max_new_tokens_cap:
            raise InvalidArgument(f"{field}.max_new_tokens", f"must be between 1 and {max_new_tokens_cap}")
        if item.boundary not in BOUNDARIES:
            raise InvalidArgument(f"{field}.boundary", f"unknown value {item.boundary}")
        if not (math.isfinite(item.temperature) and item.temperature >= 0):
            raise InvalidArgument(f"{field}.temperature", f"must be a finite number >= 0, got {item.temperature}")
        top_p = item.top_p if item.HasField("top_p") else 1.0
        if not 0 < top_p <= 1:  # also refuses NaN
            raise InvalidArgument(f"{field}.top_p", f"must be in (0, 1], got {top_p}")
        for j, stop in enumerate(item.stop):
            if not stop:
                raise InvalidArgument(f"{field}.stop[{j}]", "must not be empty")
        if len(prefix) >= vocab.context_window:
            raise InvalidArgument(
                f"{field}.prefix",
                f"{len(prefix)} tokens leave no room to generate in the {vocab.context_window}-token context window",
            )
        rule = StopRule(item.max_new_tokens, BOUNDARIES[item.boundary], tuple(item.stop))
        seed = item.seed if item.HasField("seed") else None
        requests.append(SegmentRequest(tuple(prefix), rule, float(item.temperature), float(top_p), seed))
    return requests


def validate_logprobs(
    request: weak_model_pb2.LogProbsRequest, vocab: Vocabulary, *, max_items: int
) -> list[LogProbsRequest]:
    """Engine requests for a valid LogProbs request; raises InvalidArgument on the first bad field."""
    _check_batch(len(request.items), max_items)
    requests = []
    for i, item in enumerate(request.items):
        field = f"items[{i}]"
        context = _token_ids(item.context, f"{field}.context", vocab, add_special_tokens=True)
        text = _token_ids(item.text, f"{field}.text", vocab, add_special_tokens=False)
        if not text:
            raise InvalidArgument(f"{field}.text", "must not be empty")
        total = max(len(context), 1) + len(text)  # an empty context is scored after one BOS token
        if total > vocab.context_window:
            raise InvalidArgument(
                f"{field}.text",
                f"context and text are {total} tokens, more than the {vocab.context_window}-token context window",
            )
        requests.append(LogProbsRequest(tuple(context), tuple(text)))
    return requests
