"""The engine boundary: one small Protocol that the transformers and vLLM engines implement, and plain dataclasses.

No protobuf crosses it: the servicer tokenises and validates, hands engines token ids, and builds responses.
Engines must agree on semantics so results match across them:

- a continuation ends where :mod:`services.decoding.boundaries` says, given the generated tokens' texts;
- ``logprobs`` are under the unmodified distribution (temperature 1, no top-p), for kept tokens only;
- EOS (the generation config's and the tokenizer's) is never part of ``token_ids``; generation also stops when
  prefix + generated fills the context window (the model config's position limit);
- text prefixes and LogProbs contexts are tokenised with the tokenizer's special tokens (a Llama tokenizer prepends
  BOS), LogProbs texts without; the servicer does it, so both engines see the same ids;
- LogProbs with an empty context scores the text after :attr:`WeakEngine.bos_token_id` (BOS, else EOS);
- a temperature below ``GREEDY_BELOW`` (services.decoding.requests) is greedy, as in vLLM.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from services.common.weights import WeightsInfo
from services.decoding.boundaries import FinishReason
from services.decoding.requests import LogProbsRequest, SegmentRequest


@dataclass(frozen=True)
class Continuation:
    """The generated tokens of one request, cut where the rule says."""

    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: FinishReason
    matched_stop: str
    prefix_tokens: int


@dataclass(frozen=True)
class TextLogProbs:
    """Per-token log-probs of one text and their mean."""

    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    mean_logprob: float
    tokens: tuple[str, ...]


@runtime_checkable
class WeakEngine(Protocol):
    """A frozen causal LM behind Continue and LogProbs; calls from many coroutines may overlap."""

    @property
    def weights(self) -> WeightsInfo:
        """What ModelInfo reports: the verified weights and :attr:`tokenizer_sha256`."""
        ...

    @property
    def vocab_size(self) -> int:
        """Valid token ids are ``0 <= id < vocab_size``."""
        ...

    @property
    def context_window(self) -> int:
        """Most tokens (prefix + generated, or context + text) one sequence may hold."""
        ...

    @property
    def bos_token_id(self) -> int:
        """What an empty LogProbs context is replaced by, so the first text token has something to follow."""
        ...

    @property
    def tokenizer_sha256(self) -> str:
        """:func:`~services.decoding.tokens.tokenizer_sha256` of the engine's tokenizer (also in :attr:`weights`):
        a client hands token ids to this model only when its own tokenizer has the same fingerprint."""
        ...

    @property
    def queue_depth(self) -> int:
        """Items admitted and not yet running; admission refuses with Overloaded past the configured limit."""
        ...

    def encode(self, text: str, *, add_special_tokens: bool) -> list[int]:
        """Token ids of ``text``; prefixes and contexts use the tokenizer's special tokens, scored texts do not."""
        ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def token_texts(self, token_ids: Sequence[int]) -> list[str]:
        """The decoded text of each token on its own (what boundaries are decided on)."""
        ...

    async def start(self) -> None:
        """Start background workers (micro-batchers); called once before serving."""
        ...

    async def close(self) -> None:
        """Stop workers; calls still waiting fail with NotReady."""
        ...

    def supervise(self, on_health: Callable[[bool], Awaitable[None]], give_up: Callable[[str], None]) -> None:
        """Report the engine's own health: ``on_health(False)`` when it dies apart from the process (vLLM's engine
        core), ``on_health(True)`` once restarted, ``give_up(reason)`` when it cannot be. In-process engines never
        call them: their failures are the failing call's."""
        ...

    async def continue_batch(self, requests: Sequence[SegmentRequest]) -> list[Continuation]:
        """One continuation per request, in order. Raises Overloaded when the queue is full."""
        ...

    async def logprobs_batch(self, requests: Sequence[LogProbsRequest]) -> list[TextLogProbs]:
        """Log-probs of each text given its context, in order. Raises Overloaded when the queue is full."""
        ...
