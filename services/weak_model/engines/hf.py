"""The transformers engine: one frozen float32 model on CPU (or wherever torch puts it), batched.

Continue requests decode in one continuous batch that they join and leave step by step
(:class:`~services.weak_model.engines.hf_continuous.ContinuousDecoder`); concurrent LogProbs calls are merged by a
MicroBatcher. A lock keeps their model calls from running at the same time, and the model runs in a worker thread
so the event loop (health checks, admission) stays responsive while it computes.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from services.common import model_loading
from services.common.batching import MicroBatcher
from services.common.metrics import count_prefix_cache
from services.common.settings import MiB
from services.decoding import hf_loop
from services.decoding.hf_batch import DecodingBatch, Generated
from services.decoding.prefix_cache import CacheStats, PrefixCache
from services.decoding.requests import SegmentRequest
from services.decoding.tokens import TokenizerAccessors, TokenTable
from services.weak_model.engine import (
    Continuation,
    LogProbsRequest,
    TextLogProbs,
    WeightsInfo,
)
from services.weak_model.engines.hf_continuous import ContinuousDecoder

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class HFEngine(TokenizerAccessors):
    """A :class:`~services.weak_model.engine.WeakEngine` backed by ``AutoModelForCausalLM``."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        weights: WeightsInfo,
        *,
        max_batch_size: int,
        max_delay_ms: float,
        max_queue_size: int,
        torch_threads: int,
        prefix_cache_mib: int = 256,
    ) -> None:
        self._model = model.eval()
        self._tokenizer = tokenizer
        self._tokens = TokenTable.of_model(tokenizer, model)
        self._weights = replace(weights, tokenizer_sha256=self._tokens.tokenizer_sha256)
        self._pad_id = self._tokens.pad_id(tokenizer)
        # set_num_threads only reaches threads that start using torch afterwards: re-applied in each model call.
        self._torch_threads = torch_threads
        self._prefix_cache = PrefixCache(max_bytes=prefix_cache_mib * MiB) if prefix_cache_mib else None
        self._lock = asyncio.Lock()
        knobs = {"max_batch_size": max_batch_size, "max_delay_ms": max_delay_ms, "max_queue_size": max_queue_size}
        self._continue = ContinuousDecoder(
            "weak_model.continue", self._new_batch, self._step, max_rows=max_batch_size, max_queue_size=max_queue_size,
            max_delay_ms=max_delay_ms,
        )  # fmt: skip
        self._logprobs = MicroBatcher[LogProbsRequest, TextLogProbs]("weak_model.logprobs", self._run_logprobs, **knobs)

    @property
    def weights(self) -> WeightsInfo:
        return self._weights

    @property
    def queue_depth(self) -> int:
        """Items waiting in both batchers."""
        return self._continue.queue_depth + self._logprobs.queue_depth

    async def start(self) -> None:
        await self._continue.start()
        await self._logprobs.start()

    async def close(self) -> None:
        await self._continue.stop()
        await self._logprobs.stop()

    def supervise(self, on_health: Callable[[bool], Awaitable[None]], give_up: Callable[[str], None]) -> None:
        """Nothing to watch: the model runs in this process, and a failing forward pass fails its own call."""

    async def continue_batch(self, requests: Sequence[SegmentRequest]) -> list[Continuation]:
        generated = await self._continue.submit_many(requests)
        return [
            Continuation(
                text=self.decode(g.token_ids),
                token_ids=tuple(g.token_ids),
                logprobs=tuple(g.logprobs),
                finish_reason=g.ending.reason,
                matched_stop=g.ending.matched_stop,
                prefix_tokens=len(r.prefix_ids),
            )
            for r, g in zip(requests, generated, strict=True)
        ]

    async def logprobs_batch(self, requests: Sequence[LogProbsRequest]) -> list[TextLogProbs]:
        return await self._logprobs.submit_many(requests)

    def _in_thread(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Run ``fn`` in an executor thread with the configured torch thread count."""
        if torch.get_num_threads() != self._torch_threads:
            torch.set_num_threads(self._torch_threads)
        return fn(*args, **kwargs)

    def _new_batch(self) -> DecodingBatch:
        return DecodingBatch(
            self._model,
            pieces=self._tokens.pieces,
            eos_ids=self._tokens.eos_ids,
            pad_id=self._pad_id,
            context_window=self.context_window,
            prefix_cache=self._prefix_cache,
        )

    async def _step(
        self,
        batch: DecodingBatch,
        join: list[tuple[Hashable, SegmentRequest]],
        leave: list[Hashable],
        drop: list[Hashable],
    ) -> list[tuple[Hashable, Generated]]:
        """One step of the Continue batch, holding the model; counts the prefix tokens its joins reused."""
        async with self._lock:
            before = replace(self._prefix_cache.stats) if self._prefix_cache is not None else None
            ended = await asyncio.to_thread(self._in_thread, batch.step, join=join, leave=leave, drop=drop)
            if self._prefix_cache is not None and before is not None:  # the lock keeps other steps out
                done = self._prefix_cache.stats.since(before)
            else:  # no cache: every prefix token is computed, and the metrics say so
                done = CacheStats(len(join), 0, 0, sum(len(r.prefix_ids) for _, r in join))
        if done.lookups:
            count_prefix_cache(self._weights.name, done.lookups, done.hits, done.reused_tokens, done.prefix_tokens)
        return ended

    async def _run_logprobs(self, requests: list[LogProbsRequest]) -> list[TextLogProbs]:
        async with self._lock:
            scored = await asyncio.to_thread(
                self._in_thread,
                hf_loop.score,
                self._model,
                requests,
                pad_id=self._pad_id,
                bos_id=self._tokens.bos_id,
            )
        return [
            TextLogProbs(
                token_ids=r.text_ids,
                logprobs=tuple(lps),
                mean_logprob=math.fsum(lps) / len(lps),
                tokens=tuple(self.token_texts(r.text_ids)),
            )
            for r, lps in zip(requests, scored, strict=True)
        ]


def load_pretrained(path: Path, *, torch_threads: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer from ``path``, loaded once: float32, eval mode, no gradients."""
    torch.set_num_threads(torch_threads)
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = model_loading.load_pretrained(AutoModelForCausalLM, path, dtype=torch.float32)
    model.requires_grad_(False)
    log.info("loaded %s (%d parameters) with %d torch threads", path, model.num_parameters(), torch_threads)
    return model.eval(), tokenizer


# Decoding never drops special tokens or rewrites spaces: the text must match the token ids exactly.
