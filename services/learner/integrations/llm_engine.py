"""The policy as a segment author when generation belongs to the RL stack: OpenRLHF's ``llm_engine``.

OpenRLHF hands an AgentExecutor its vLLM engine actor, whose ``generate(prompt_token_ids, sampling_params)``
returns a ``vllm.RequestOutput``. :class:`LlmEngineWriter` makes every policy segment with it, cut at the same
boundaries as the weak model's (:func:`~services.decoding.vllm_segments.generate_segment`), so OpenRLHF
trains on tokens its own engine sampled and a tandem rollout is the same whichever stack runs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from services.decoding.boundaries import FinishReason
from services.decoding.requests import SegmentRequest
from services.decoding.vllm_segments import BoundaryVocabulary, Sampling, generate_segment
from services.learner.clients.segments import Segment

# SamplingParams fields the stack's user chose that a segment keeps (temperature, top_p and seed come per segment).
_KEPT_FIELDS = ("top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty")


def sampling_extras(sampling_params: Any) -> dict[str, Any]:
    """The kept fields of the stack's ``vllm.SamplingParams`` (missing ones stay at vLLM's defaults)."""
    return {name: getattr(sampling_params, name) for name in _KEPT_FIELDS if hasattr(sampling_params, name)}


class LlmEngineWriter:
    """A :class:`~services.learner.clients.segments.SegmentWriter` over an engine with ``generate(ids, params)``."""

    def __init__(
        self,
        llm_engine: Any,
        vocab: BoundaryVocabulary,
        context_window: int,
        top_p: float = 1.0,
        extras: dict[str, Any] | None = None,
    ) -> None:
        self._engine = llm_engine
        self._vocab = vocab
        self._context_window = context_window
        self._top_p = top_p
        self._extras = extras or {}

    async def _generate(self, prompt_ids: list[int], params: Any) -> Any:
        return await self._engine.generate(prompt_ids, params)

    async def _write_one(self, request: SegmentRequest) -> Segment:
        budget = min(request.rule.tokens_needed, self._context_window - len(request.prefix_ids))
        sampling = Sampling(request.temperature, self._top_p, request.seed, self._extras)
        segment = await generate_segment(
            self._generate, request.prefix_ids, request.rule, budget, sampling, self._vocab
        )
        ended = segment.ending.reason is FinishReason.EOS
        return Segment(segment.token_ids, segment.logprobs, ended, segment.eos_logprob)

    async def write(self, requests: Sequence[SegmentRequest]) -> list[Segment]:
        """All requests at once: the engine batches them (continuous batching)."""
        return list(await asyncio.gather(*(self._write_one(r) for r in requests)))
