"""The vLLM engine: the same frozen weights behind vLLM's ``AsyncLLM`` (v1 engine, continuous batching).

Results match the transformers engine: continuations are cut by
:func:`~services.decoding.vllm_segments.generate_segment` exactly where
:class:`~services.decoding.boundaries.BoundaryScanner` cuts them in the transformers loop.

- Log-probs come from vLLM with ``logprobs_mode="raw_logprobs"``: the sampled token's log-prob under the model's
  unmodified distribution (no temperature, no top-p), as the transformers engine reports them.
- EOS: every id of the generation config's and the tokenizer's EOS is a stop token id; it is never kept. No
  ``min_tokens``: it would mask EOS at the first step, where the transformers engine lets EOS end a continuation
  before its first token (the bundled model does so after a finished solution).
- LogProbs: ``prompt_logprobs=0`` over (context or [BOS]) + text minus its last token, which is then generated with
  ``allowed_token_ids`` = [that token] for its raw log-prob (so a context + text filling the window still fits).
- Admission: requests go straight into vLLM (continuous batching, at most ``max_batch_size`` running sequences);
  items beyond those count as waiting (:attr:`VLLMEngine.queue_depth`) and past ``max_queue_size`` waiting items a
  request gets :class:`~services.common.errors.Overloaded` at once, all of its items or none, like the
  transformers engine's micro-batcher.

- Seeded sampling on CPU: vLLM rewinds a request's random generator after a partial (chunked) prefill, which only
  CUDA's generators support; on CPU that kills the engine core ("CPU Generator does not use offset") as soon as a
  batch of seeded requests splits a prompt. On CPU chunked prefill is therefore off, with a token budget per step
  of at least one whole context window, so every prompt is prefilled in one step.
- Engine death: the :class:`~services.decoding.vllm_supervisor.EngineSupervisor` owns the ``AsyncLLM``: health goes
  NOT_SERVING as soon as the engine core dies, calls get :class:`~services.common.errors.NotReady` (UNAVAILABLE),
  and the engine restarts with backoff, or the service exits non-zero after ``max_restarts``.

vLLM runs its engine core in a child process (``spawn`` on CPU): whatever starts this engine must be importable
without side effects, i.e. a script starts it under ``if __name__ == "__main__":`` (the CLI and pytest do).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from services.common.admission import EngineAdmission
from services.common.errors import NotReady
from services.common.metrics import count_prefix_cache
from services.decoding.requests import SegmentRequest
from services.decoding.tokens import TokenizerAccessors, TokenTable
from services.decoding.vllm_heads import PaddedHeadsWorkerExtension, prepare_platform
from services.decoding.vllm_segments import BoundaryVocabulary, Sampling, generate_segment
from services.decoding.vllm_start import start_async_llm
from services.decoding.vllm_supervisor import EngineSupervisor, GiveUpCallback, HealthCallback
from services.weak_model.engine import (
    Continuation,
    LogProbsRequest,
    TextLogProbs,
    WeightsInfo,
)

log = logging.getLogger(__name__)

# Decoding never drops special tokens or rewrites spaces: the text must match the token ids exactly.


CPU_BLOCK_SIZE = 32
"""KV-cache block size on CPU: the smallest vLLM's CPU attention takes, so prefix caching reuses short prefixes."""


def engine_args(
    path: Path,
    *,
    context_window: int,
    seed: int,
    max_num_seqs: int,
    device: str | None = None,
    pad_heads: bool | None = None,
    gpu_memory_utilization: float = 0.9,
) -> Any:  # vllm.AsyncEngineArgs, imported lazily (importing vllm takes seconds)
    """The AsyncLLM configuration the service uses (and the benchmark measures raw).

    ``device``: None = the platform vLLM detects. ``pad_heads``: apply the GPT-2 head-padding patch in vLLM's CPU
    workers; None decides from the model config (:func:`~services.decoding.vllm_heads.needs_padded_heads`),
    True/False force it (to check it is harmless). ``gpu_memory_utilization``: the GPU's share the engine takes.
    """
    from vllm import AsyncEngineArgs

    cpu, pad = prepare_platform(path, device, pad_heads)
    return AsyncEngineArgs(
        model=str(path),
        tokenizer=str(path),
        dtype="float32",
        seed=seed,
        max_model_len=context_window,
        max_num_seqs=max_num_seqs,
        enable_prefix_caching=True,
        # Prefix caching reuses whole blocks only. vLLM's CPU attention defaults to 128-token blocks, which a
        # tandem rollout's prefix (a prompt plus a few words) seldom fills: nothing was ever reused. 32 is the
        # smallest block it accepts (MultipleOf(32)); GPUs keep vLLM's default (16).
        block_size=CPU_BLOCK_SIZE if cpu else None,
        # CPU: no chunked prefill, so a seeded request's generator is never rewound (see the module docstring).
        enable_chunked_prefill=not cpu,
        max_num_batched_tokens=max(context_window, 2048) if cpu else None,
        enforce_eager=cpu,
        worker_extension_cls=PaddedHeadsWorkerExtension.qualified_name() if pad else "",
        logprobs_mode="raw_logprobs",
        gpu_memory_utilization=gpu_memory_utilization,
        disable_log_stats=True,
    )


async def _all_or_none(run: Callable[[Any], Awaitable[Any]], items: Sequence[Any]) -> list[Any]:
    """``run`` on every item at once; the first failure cancels the others (their requests leave vLLM)."""
    tasks = [asyncio.ensure_future(run(item)) for item in items]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


class VLLMEngine(TokenizerAccessors):
    """A :class:`~services.weak_model.engine.WeakEngine` backed by vLLM's ``AsyncLLM``."""

    def __init__(
        self,
        path: Path,
        weights: WeightsInfo,
        *,
        max_batch_size: int,
        max_queue_size: int,
        seed: int = 0,
        gpu_memory_utilization: float = 0.9,
        max_restarts: int = 3,
        restart_backoff_s: float = 2.0,
    ) -> None:
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig

        self._path = path
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        config = AutoConfig.from_pretrained(path)
        try:
            generation = GenerationConfig.from_pretrained(path)
        except OSError:
            generation = GenerationConfig.from_model_config(config)
        self._tokens = TokenTable.build(self._tokenizer, config, generation.eos_token_id, int(config.vocab_size))
        self._weights = replace(weights, tokenizer_sha256=self._tokens.tokenizer_sha256)
        self._vocab = BoundaryVocabulary.from_pieces(self._tokens.pieces, self._tokens.eos_ids)
        self._max_batch_size = max_batch_size
        self._seed = seed
        self._gpu_memory_utilization = gpu_memory_utilization
        # One count for Continue and LogProbs items: both run on the same engine.
        self._admission = EngineAdmission("weak_model", max_running=max_batch_size, max_queue_size=max_queue_size)
        self._ids = itertools.count()
        self._supervisor = EngineSupervisor(
            "weak_model", self._start_llm, max_restarts=max_restarts, backoff_s=restart_backoff_s
        )

    # -- the Protocol's properties and tokenizer helpers ------------------------------------------------------

    @property
    def weights(self) -> WeightsInfo:
        return self._weights

    @property
    def queue_depth(self) -> int:
        """Admitted items beyond the ``max_batch_size`` that vLLM runs at once."""
        return self._admission.queue_depth

    # -- lifecycle ---------------------------------------------------------------------------------------------

    def _start_llm(self) -> Any:
        # No local names the engine: the first import of vLLM (in engine_args) leaves an ImportError that a library
        # keeps, whose traceback holds this call's frame, and a returned frame keeps its locals. An engine held
        # there outlived close() and failed in its __del__ at interpreter exit.
        return start_async_llm(self._engine_args())

    def _engine_args(self) -> Any:
        return engine_args(
            self._path,
            context_window=self.context_window,
            seed=self._seed,
            max_num_seqs=self._max_batch_size,
            gpu_memory_utilization=self._gpu_memory_utilization,
        )

    def load(self) -> None:
        """Start the AsyncLLM (blocking, tens of seconds on CPU: call it in a thread)."""
        self._supervisor.load()
        log.info("vLLM engine started on %s", self._path)

    async def start(self) -> None:
        await self._supervisor.start()
        self._admission.open()

    def supervise(self, on_health: HealthCallback, give_up: GiveUpCallback) -> None:
        """Engine death flips health through ``on_health``; ``give_up`` is called when every restart failed."""
        self._supervisor.connect(on_health, give_up)

    @property
    def failures(self) -> int:
        """Engine deaths so far (each one restarted or given up on)."""
        return self._supervisor.failures

    async def close(self) -> None:
        """Fail what is running with NotReady, then shut the engine-core process down."""
        await self._admission.close()
        await self._supervisor.close()
        log.info("vLLM engine stopped")

    # -- admission ---------------------------------------------------------------------------------------------

    async def _admitted(self, name: str, items: Sequence[Any], run: Callable[[Any], Awaitable[Any]]) -> list[Any]:
        if self._supervisor.llm is None:
            raise NotReady(f"weak_model.{name}: the vLLM engine is not running (starting or restarting)")
        return await self._admission.run(len(items), lambda: _all_or_none(run, items), what=f"weak_model.{name}")

    async def continue_batch(self, requests: Sequence[SegmentRequest]) -> list[Continuation]:
        return await self._admitted("continue", requests, self._continue_one)

    async def logprobs_batch(self, requests: Sequence[LogProbsRequest]) -> list[TextLogProbs]:
        return await self._admitted("logprobs", requests, self._logprobs_one)

    # -- one item ----------------------------------------------------------------------------------------------

    async def _generate(self, prompt_ids: list[int], params: Any) -> Any:
        from vllm.inputs import tokens_input
        from vllm.v1.engine.exceptions import EngineDeadError

        llm = self._supervisor.llm
        if llm is None:
            raise NotReady("weak_model: the vLLM engine is not running (starting or restarting)")
        request_id = f"weak-{next(self._ids)}"
        final = None
        try:
            # A rendered engine input: no renderer round trip through vLLM's thread pool per request.
            async for output in llm.generate(tokens_input(prompt_ids), params, request_id):
                final = output
        except asyncio.CancelledError:
            if not llm.errored:
                await llm.abort(request_id)
            raise
        except EngineDeadError:
            self._supervisor.report_dead(llm, "EngineDeadError in a call")
            raise NotReady("weak_model: the vLLM engine died; it is restarting (see the server log)") from None
        if final is None:
            raise RuntimeError(f"vLLM returned nothing for {request_id}")
        self._count_cached(len(prompt_ids), final.num_cached_tokens or 0)
        return final

    def _count_cached(self, prompt_tokens: int, cached: int) -> None:
        """vLLM's prefix caching (on): how much of each prompt it found computed, as the hf engine's cache reports."""
        count_prefix_cache(self._weights.name, 1, int(cached > 0), cached, prompt_tokens)

    async def _continue_one(self, request: SegmentRequest) -> Continuation:
        budget = min(request.rule.tokens_needed, self.context_window - len(request.prefix_ids))
        if budget < 1:  # validation refuses these; an engine caller might not
            raise ValueError(f"a prefix leaves no room to generate in the {self.context_window}-token context window")
        sampling = Sampling(request.temperature, request.top_p, request.seed)
        rule, vocab = request.rule, self._vocab
        segment = await generate_segment(self._generate, request.prefix_ids, rule, budget, sampling, vocab)
        return Continuation(
            text=self.decode(segment.token_ids),
            token_ids=segment.token_ids,
            logprobs=segment.logprobs,
            finish_reason=segment.ending.reason,
            matched_stop=segment.ending.matched_stop,
            prefix_tokens=len(request.prefix_ids),
        )

    async def _logprobs_one(self, request: LogProbsRequest) -> TextLogProbs:
        from vllm import SamplingParams

        context = list(request.context_ids) or [self._tokens.bos_id]
        text = list(request.text_ids)
        # The prompt holds all but the last text token (context + text may fill the whole window, and vLLM wants
        # room for one generated token); that one token is generated, restricted to the last text token, and its
        # raw log-prob is the model's own (raw_logprobs: read before any restriction).
        params = SamplingParams(
            max_tokens=1,
            temperature=0.0,
            logprobs=0,
            prompt_logprobs=0 if len(text) > 1 else None,
            allowed_token_ids=[text[-1]],
            detokenize=False,
        )
        output = await self._generate(context + text[:-1], params)
        steps = (output.prompt_logprobs or [])[len(context) :] if len(text) > 1 else []
        generated = output.outputs[0]
        if len(steps) != len(text) - 1 or list(generated.token_ids) != text[-1:] or not generated.logprobs:
            raise RuntimeError("vLLM did not return a log-prob for every text token")
        lps = [float(step[token].logprob) for token, step in zip(text, steps, strict=False)]
        lps.append(float(generated.logprobs[0][text[-1]].logprob))
        return TextLogProbs(
            token_ids=request.text_ids,
            logprobs=tuple(lps),
            mean_logprob=math.fsum(lps) / len(lps),
            tokens=tuple(self.token_texts(request.text_ids)),
        )
