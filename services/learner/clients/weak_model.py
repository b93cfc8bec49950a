"""The weak model as a segment author and a legibility judge, through the weak-model service."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TypeVar

from services.common.genproto.legibility.v1 import common_pb2, weak_model_pb2, weak_model_pb2_grpc
from services.decoding.boundaries import Boundary
from services.decoding.requests import SegmentRequest
from services.learner.clients.segments import Segment

_T = TypeVar("_T")

_BOUNDARY = {
    Boundary.NONE: weak_model_pb2.BOUNDARY_NONE,
    Boundary.WORD: weak_model_pb2.BOUNDARY_WORD,
    Boundary.SENTENCE: weak_model_pb2.BOUNDARY_SENTENCE,
    Boundary.STEP: weak_model_pb2.BOUNDARY_STEP,
}


class WeakModelClient:
    """A :class:`SegmentWriter` backed by ``Continue``; ``mean_log_probs`` backed by ``LogProbs``."""

    def __init__(
        self, stub: weak_model_pb2_grpc.WeakModelServiceStub, timeout_s: float = 60.0, max_items: int = 128
    ) -> None:
        self._stub = stub
        self._timeout_s = timeout_s
        self._max_items = max_items
        """Items per request: the service refuses requests over its queue size (256 by default)."""

    def _chunks(self, items: list[_T]) -> list[list[_T]]:
        return [items[i : i + self._max_items] for i in range(0, len(items), self._max_items)]

    async def write(self, requests: Sequence[SegmentRequest]) -> list[Segment]:
        """One ``Continue`` call for all requests (the service micro-batches them into model calls)."""
        if not requests:
            return []
        items = []
        for r in requests:
            item = weak_model_pb2.ContinueItem(
                prefix=common_pb2.TextOrTokens(token_ids=common_pb2.TokenIds(ids=r.prefix_ids)),
                max_new_tokens=r.rule.max_new_tokens,
                boundary=_BOUNDARY[r.rule.boundary],
                stop=list(r.rule.stop),
                temperature=r.temperature,
            )
            if r.seed is not None:
                item.seed = r.seed
            items.append(item)
        replies = await asyncio.gather(
            *(
                self._stub.Continue(weak_model_pb2.ContinueRequest(items=chunk), timeout=self._timeout_s)
                for chunk in self._chunks(items)
            )
        )
        return [
            Segment(tuple(res.token_ids), tuple(res.logprobs), res.finish_reason == weak_model_pb2.FINISH_REASON_EOS)
            for reply in replies
            for res in reply.results
        ]

    async def model_info(self, timeout_s: float | None = None) -> common_pb2.ModelInfo:
        """Which weights (and tokenizer) the weak-model service serves."""
        reply = await self._stub.GetModelInfo(
            weak_model_pb2.WeakModelServiceGetModelInfoRequest(), timeout=timeout_s or self._timeout_s
        )
        return reply.model

    async def mean_log_probs(self, contexts: Sequence[str], texts: Sequence[str]) -> list[float]:
        """The weak model's mean per-token log-prob of each text after its context (minus = cross-entropy, nats)."""
        if not texts:
            return []
        items = [
            weak_model_pb2.LogProbsItem(context=common_pb2.TextOrTokens(text=c), text=common_pb2.TextOrTokens(text=t))
            for c, t in zip(contexts, texts, strict=True)
        ]
        replies = await asyncio.gather(
            *(
                self._stub.LogProbs(weak_model_pb2.LogProbsRequest(items=chunk), timeout=self._timeout_s)
                for chunk in self._chunks(items)
            )
        )
        return [res.mean_logprob for reply in replies for res in reply.results]
