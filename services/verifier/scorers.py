"""The verifier's engines: what turns encoded rows (token ids ending in the read-out EOS) into logits.

- :class:`TorchScorer` (``--engine hf``): the transformers sequence classifier in this process; forward passes run in
  a worker thread, in length-sorted chunks of about FORWARD_TOKENS tokens (:func:`forward_rows`). With
  ``--hf-worker process`` the same passes run in a child process instead (:mod:`services.verifier.forward_process`).
- :class:`VllmScorer` (``--engine vllm``): vLLM's pooling runner (``AsyncLLM``, ``--convert classify``), which runs
  the model in its own engine-core process and batches rows itself; the logit is taken raw (``use_activation``
  off), the same number the transformers engine reads at the EOS.

Both take the same rows (:class:`~services.tasks.verifier_input.VerifierInput` encodes them once, in the service), so
an engine never changes what is scored.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from services.decoding.vllm_shutdown import shut_down
from services.decoding.vllm_start import start_async_llm
from services.tasks.verifier_input import VerifierInput, pad_rows, readout_logits

log = logging.getLogger(__name__)

FORWARD_TOKENS = {"cpu": 1024}
"""Tokens per torch forward call, by device type (other devices: DEFAULT_FORWARD_TOKENS); a micro-batch of more is
scored in length-sorted chunks of about this many. On 2 CPU cores (bundled verifier, toy pairs of ~120 tokens) the
CPU time per row is flat between 600 and 1,200 and rises on either side; 13-18 % below the fixed 16-row chunks this
replaced, at micro-batches of 21, 32 and 64 rows (the service's child gets ~21 at 64 clients x 1 item)."""
DEFAULT_FORWARD_TOKENS = 16384
"""A GPU's chunk: a whole micro-batch of 64 rows of up to 256 tokens in one call (not measured: no GPU here)."""


class RowScorer(Protocol):
    engine: str
    concurrent_batches: int | None
    """Micro-batches the service may have in flight at once: 1 for a forward pass in a thread, 2 for the child
    process (it starts the next while the service hands out the last); None for an engine that forms its own
    batches (vLLM): rows go to it as they come, no micro-batcher in front."""

    async def score(self, rows: Sequence[list[int]]) -> list[float]:
        """The logit of each encoded row, in order."""
        ...

    async def close(self) -> None:
        """Release the engine (its calls have finished)."""
        ...


def load_classifier(path: Path, *, torch_threads: int, device: str) -> Any:
    """The checkpoint's sequence classifier in float32, no gradients, in eval mode on ``device`` (both hf workers)."""
    from transformers import AutoModelForSequenceClassification

    from services.common.model_loading import load_pretrained

    torch.set_num_threads(torch_threads)
    model = load_pretrained(AutoModelForSequenceClassification, path, dtype=torch.float32)
    model.requires_grad_(False)
    return model.to(device).eval()


def length_chunks(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Row indices sorted by length, cut into as few chunks of equal row count (within one) as hold about
    ``max_tokens`` tokens each: ``ceil(sum(lengths) / max_tokens)`` chunks, never more than there are rows.

    A token budget rather than a row count: a call's size (and so its activations' footprint) follows its tokens,
    so longer rows (GSM8K, MATH solutions) go fewer to a call. Equal counts: a call costs the same fixed
    Python and dispatch time for one row as for eight, so 17 rows a 16-row budget would cut 16 + 1 go 8 + 9.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    if not order:
        return []
    count = min(len(order), max(1, math.ceil(sum(lengths) / max_tokens)))
    bounds = [len(order) * k // count for k in range(count + 1)]
    return [order[start:end] for start, end in itertools.pairwise(bounds)]


@torch.inference_mode()
def forward_rows(model: Any, pad_id: int, rows: Sequence[list[int]]) -> list[float]:
    """The logit of each encoded row from batched forward passes of ``model``, in the rows' order.

    Rows of similar length go through together (:func:`length_chunks`, FORWARD_TOKENS at a time): less padding, and
    activations that stay in cache. On 2 CPU cores a batch of 64 toy pairs scores ~1.7x faster in chunks than in one
    pass."""
    device = next(model.parameters()).device.type
    scores = [0.0] * len(rows)
    for chunk in length_chunks([len(row) for row in rows], FORWARD_TOKENS.get(device, DEFAULT_FORWARD_TOKENS)):
        logits = readout_logits(model, *pad_rows([rows[i] for i in chunk], pad_id)).tolist()
        for i, logit in zip(chunk, logits, strict=True):
            scores[i] = float(logit)
    return scores


class TorchScorer:
    """The transformers model in this process."""

    engine = "hf"
    concurrent_batches = 1

    def __init__(self, model: Any, verifier_input: VerifierInput, torch_threads: int) -> None:
        self._model = model.eval()
        self._input = verifier_input
        self._torch_threads = torch_threads

    def forward(self, rows: Sequence[list[int]]) -> list[float]:
        """Logits from batched forward passes (blocking; callers off the event loop)."""
        if torch.get_num_threads() != self._torch_threads:
            # set_num_threads only reaches threads that start using torch afterwards: re-applied per call.
            torch.set_num_threads(self._torch_threads)
        return forward_rows(self._model, self._input.pad_id, rows)

    async def score(self, rows: Sequence[list[int]]) -> list[float]:
        return await asyncio.to_thread(self.forward, rows)

    async def close(self) -> None:
        return None


def vllm_engine_args(path: Path, *, context_window: int, max_num_seqs: int, gpu_memory_utilization: float) -> Any:
    """vLLM's pooling runner for a one-label sequence classifier, float32 like the transformers engine.

    On CPU: eager mode, no chunked prefill, 1 GiB of KV cache, and the GPT-2 16-wide-head padding patch in the
    workers when the model needs it (as the weak model's vllm engine)."""
    from vllm import AsyncEngineArgs

    from services.decoding.vllm_heads import PaddedHeadsWorkerExtension, prepare_platform

    cpu, pad = prepare_platform(path)
    return AsyncEngineArgs(
        model=str(path),
        tokenizer=str(path),
        runner="pooling",
        convert="classify",
        dtype="float32",
        seed=0,
        max_model_len=context_window,
        max_num_seqs=max_num_seqs,
        enable_chunked_prefill=not cpu,
        max_num_batched_tokens=max(context_window, 2048) if cpu else None,
        enforce_eager=cpu,
        gpu_memory_utilization=gpu_memory_utilization,
        worker_extension_cls=PaddedHeadsWorkerExtension.qualified_name() if pad else "",
        disable_log_stats=True,
    )


class VllmScorer:
    """vLLM's ``AsyncLLM`` with the pooling runner; every row is its own request, vLLM batches them."""

    engine = "vllm"
    concurrent_batches = None

    def __init__(self, llm: Any) -> None:
        from vllm import PoolingParams

        self._llm = llm
        self._params = PoolingParams(task="classify", use_activation=False)
        self._ids = itertools.count()
        self._prefix = f"verifier-{os.getpid()}-{id(self):x}"

    @classmethod
    def start(cls, path: Path, *, context_window: int, max_num_seqs: int, gpu_memory_utilization: float) -> VllmScorer:
        """Start the engine (blocking: its engine-core process loads the weights; ~30 s on 2 CPU cores)."""
        args = vllm_engine_args(
            path,
            context_window=context_window,
            max_num_seqs=max_num_seqs,
            gpu_memory_utilization=gpu_memory_utilization,
        )
        return cls(start_async_llm(args))

    async def _one(self, row: list[int]) -> float:
        from vllm.inputs import tokens_input

        final = None
        request_id = f"{self._prefix}-{next(self._ids)}"
        # Token ids as a rendered engine input: vLLM takes it as is, where a TokensPrompt goes through its renderer
        # on a thread pool first (a thread hop per row, ~8 % of the service's py-spy samples at 64 x 8).
        async for output in self._llm.encode(tokens_input(row), self._params, request_id):
            final = output
        if final is None:
            raise RuntimeError(f"vLLM returned no output for {request_id}")
        return float(final.outputs.data[0])

    async def score(self, rows: Sequence[list[int]]) -> list[float]:
        return list(await asyncio.gather(*(self._one(row) for row in rows)))

    async def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            await shut_down(llm)
