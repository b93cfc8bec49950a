"""The in-process policy: a transformers causal LM that writes segments and is trained by the learner."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from services.common.model_loading import load_pretrained
from services.decoding.boundaries import FinishReason
from services.decoding.hf_batch import DecodingBatch, Generated
from services.decoding.hf_loop import generate
from services.decoding.prefix_cache import PrefixCache
from services.decoding.requests import SegmentRequest
from services.decoding.tokens import TokenTable
from services.learner.clients.segments import Segment

_T = TypeVar("_T")


class TransformersPolicy:
    """A :class:`SegmentWriter` over a transformers model; the same decoding loop the weak-model service uses."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, torch_threads: int = 2) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.tokens = TokenTable.of_model(tokenizer, model)
        self.pad_id = self.tokens.pad_id(tokenizer)
        self._torch_threads = torch_threads
        self.prefix_cache = PrefixCache()
        """KV states of each rollout's text so far, so its next segment feeds only what the weak model added;
        cleared whenever the weights change (:class:`~services.learner.rl.trainer.PolicyTrainer` does)."""

    @classmethod
    def load(cls, path: Path, torch_threads: int = 2) -> TransformersPolicy:
        """A policy from a checkpoint directory (model + tokenizer)."""
        return cls(load_pretrained(AutoModelForCausalLM, path), AutoTokenizer.from_pretrained(path), torch_threads)

    def copy(self) -> TransformersPolicy:
        """An independent policy with the same weights (deep-copied; the tokenizer is shared, read-only)."""
        return TransformersPolicy(copy.deepcopy(self.model), self.tokenizer, self._torch_threads)

    @property
    def context_window(self) -> int:
        return self.tokens.context_window

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def tokens_text(self, token_ids: Sequence[int]) -> list[str]:
        """Each token's own text (for mapping character offsets to token positions)."""
        return [self.tokens.pieces[i] for i in token_ids]

    async def write(self, requests: Sequence[SegmentRequest]) -> list[Segment]:
        """Sample every request's segment in one batched, KV-cached decoding loop (in a worker thread)."""
        if not requests:
            return []
        return await asyncio.to_thread(self._write, list(requests))

    def session(self) -> PolicySession:
        """A continuous decoding loop for many rollouts' segments (what a tandem rollout loop steps)."""
        return PolicySession(self)

    def _write(self, requests: list[SegmentRequest]) -> list[Segment]:
        def write() -> list[Generated]:
            return generate(
                self.model,
                requests,
                pieces=self.tokens.pieces,
                eos_ids=self.tokens.eos_ids,
                pad_id=self.pad_id,
                context_window=self.context_window,
                prefix_cache=self.prefix_cache,
            )

        return [_segment(g) for g in self.in_eval(write)]

    def in_eval(self, work: Callable[[], _T]) -> _T:
        """Run ``work`` with the model in eval mode and this policy's torch thread count (blocking)."""
        torch.set_num_threads(self._torch_threads)
        was_training = self.model.training
        self.model.eval()
        try:
            return work()
        finally:
            self.model.train(was_training)


class PolicySession:
    """The policy's :class:`~services.learner.clients.segments.SegmentSession`: a
    :class:`~services.decoding.hf_batch.DecodingBatch` over its model and prefix cache, stepped in a worker thread.
    Live for one batch of rollouts: the weights must not change while it is (the trainer steps after the rollouts).
    """

    def __init__(self, policy: TransformersPolicy) -> None:
        self._policy = policy
        self._batch = DecodingBatch(
            policy.model,
            pieces=policy.tokens.pieces,
            eos_ids=policy.tokens.eos_ids,
            pad_id=policy.pad_id,
            context_window=policy.context_window,
            prefix_cache=policy.prefix_cache,
        )

    @property
    def running(self) -> int:
        return self._batch.running

    async def step(
        self,
        join: Sequence[tuple[Hashable, SegmentRequest]] = (),
        resume: Sequence[tuple[Hashable, SegmentRequest]] = (),
        leave: Sequence[Hashable] = (),
        drop: Sequence[Hashable] = (),
    ) -> list[tuple[Hashable, Segment]]:
        def step() -> list[tuple[Hashable, Generated]]:
            return self._batch.step(join=join, resume=resume, leave=leave, drop=drop)

        ended = await asyncio.to_thread(self._policy.in_eval, step)
        return [(key, _segment(g)) for key, g in ended]


def _segment(g: Generated) -> Segment:
    return Segment(
        tuple(g.token_ids),
        tuple(g.logprobs),
        g.ending.reason is FinishReason.EOS,
        eos_log_prob=g.eos_logprob,
        eos_id=g.eos_id,
    )
