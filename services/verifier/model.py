"""The verifier model: a sequence-classification LM that scores (problem, solution) pairs, micro-batched.

One object holds one loaded checkpoint (weights, tokenizer, batcher) and is used through one reference, so a
hot swap replaces the whole object: requests keep the object they started with and finish on it. Inputs are
encoded by the task's :class:`~services.tasks.verifier_input.VerifierInput` (for the toy task exactly as the
bundled verifier was trained: problem, newline, solution, EOS as the read-out, right-padded); the score is the logit
at each row's read-out, taken explicitly so that PAD == EOS tokenizers score right. Forward passes run in a worker
thread or a child process (hf) or in vLLM's engine-core process (vllm), so the event loop (health checks,
admission) stays responsive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from services.common.artifacts import directory_sha256
from services.common.batching import MicroBatcher, PassThrough
from services.common.tasks import wait_for_event
from services.common.weights import WeightsInfo
from services.decoding.tokens import DECODE, context_window, max_text_chars, tokenizer_sha256
from services.tasks.prompts import PromptFormat
from services.tasks.toy_task import ToyTask
from services.tasks.verifier_input import VerifierInput
from services.verifier.forward_process import ProcessTorchScorer
from services.verifier.scorers import RowScorer, TorchScorer, VllmScorer, load_classifier

log = logging.getLogger(__name__)

Pair = tuple[str, str]
"""(problem, solution)."""

Scorable = Pair | list[int]
"""A pair, or its token ids (:meth:`VerifierModel.ids`) when request validation has already encoded it."""


@dataclass(frozen=True)
class StepsItem:
    """A solution to score after each of its steps."""

    problem: str
    solution: str
    step_ends: tuple[int, ...] = ()
    """Character offsets where steps end (strictly increasing, in 1..len(solution)); empty: the task's splitter."""

    def ends(self, split: Callable[[str], list[int]]) -> list[int]:
        """The offsets whose prefixes are scored; ``split`` gives the task's step ends when none were sent."""
        return list(self.step_ends) if self.step_ends else split(self.solution)


@dataclass(frozen=True)
class StepScore:
    """The score of ``solution[:end]``."""

    end: int
    score: float


class VerifierModel:
    """A loaded verifier checkpoint; :meth:`score` and :meth:`score_steps` may be awaited from many coroutines."""

    def __init__(
        self,
        scorer: Callable[[VerifierInput], RowScorer],
        config: PretrainedConfig,
        tokenizer: PreTrainedTokenizerBase,
        weights: WeightsInfo,
        *,
        max_batch_size: int,
        max_delay_ms: float,
        max_queue_size: int,
        prompts: PromptFormat | None = None,
    ) -> None:
        self._tokenizer = tokenizer
        self.prompts = prompts or PromptFormat(ToyTask(), tokenizer)
        self._input = VerifierInput(self.prompts)
        self._scorer = scorer(self._input)
        self._weights = weights
        self._context_window = context_window(config, tokenizer)
        pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], **DECODE)
        self._max_text_chars = max_text_chars(pieces, self._context_window)
        probe = "é∑\u2603 x"  # characters a lossy tokenizer drops (the bundled one does)
        self._lossless = tokenizer.decode(tokenizer.encode(probe, add_special_tokens=False)) == probe
        # A character that is a token by itself is never dropped: a text holding one has tokens, without encoding it.
        self._token_chars = frozenset(piece for piece in pieces if len(piece) == 1)
        self._batcher: MicroBatcher[Scorable, float] | PassThrough[Scorable, float]
        batches = self._scorer.concurrent_batches
        if batches is None:
            self._batcher = PassThrough(
                "verifier.score", self._run_batch, max_batch_size=max_batch_size, max_queue_size=max_queue_size
            )
        else:
            self._batcher = MicroBatcher(
                "verifier.score",
                self._run_batch,
                max_batch_size=max_batch_size,
                max_delay_ms=max_delay_ms,
                max_queue_size=max_queue_size,
                max_concurrent_batches=batches,
            )
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def weights(self) -> WeightsInfo:
        return self._weights

    @property
    def context_window(self) -> int:
        """Most tokens one scored sequence may hold, the EOS read-out included."""
        return self._context_window

    @property
    def max_text_chars(self) -> int:
        """A problem + solution longer than this cannot fit the context window (no token decodes to more)."""
        return self._max_text_chars

    @property
    def queue_depth(self) -> int:
        """Pairs admitted and waiting for a forward pass."""
        return self._batcher.queue_depth

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._tokenizer

    @property
    def verifier_input(self) -> VerifierInput:
        """How pairs become token ids and read-out positions (shared with the retraining job)."""
        return self._input

    def token_count(self, problem: str, solution: str) -> int:
        """Tokens the pair is scored as, the EOS read-out included."""
        return self._input.token_count(problem, solution)

    def ids(self, problem: str, solution: str) -> list[int]:
        """The token ids the pair is scored as, ending in the EOS read-out."""
        return self._input.ids(problem, solution)

    def has_tokens(self, text: str) -> bool:
        """Whether ``text`` alone encodes to any token (False when a lossy tokenizer drops every character).

        Answered without tokenising on the request path: a lossless tokenizer (byte-level BPE: GPT-2, Llama 3,
        Qwen2) gives every non-empty text a token, and so does any character that is a token by itself; only a text
        with neither is encoded."""
        if self._lossless or not self._token_chars.isdisjoint(text):
            return bool(text)
        return bool(self._tokenizer.encode(text, add_special_tokens=False))

    def step_ends(self, solution: str) -> list[int]:
        """Where the task cuts ``solution`` into steps: the prefixes ScoreSteps scores when the client sends none."""
        return [step.end for step in self.prompts.task.split_steps(solution)]

    async def start(self) -> None:
        """Start the micro-batcher; called once before serving."""
        await self._batcher.start()

    async def close(self, grace_s: float = 30.0) -> None:
        """Let calls in flight finish (up to ``grace_s``), then stop; calls still waiting fail with NotReady."""
        if not await wait_for_event(self._idle, grace_s):
            log.warning("verifier %s: calls still in flight after %.1fs", self._weights.uri, grace_s)
        await self._batcher.stop()
        await self._scorer.close()

    @property
    def engine(self) -> str:
        """``hf`` or ``vllm``: what runs the forward passes."""
        return self._scorer.engine

    def forward(self, pairs: Sequence[Scorable]) -> list[float]:
        """The logit of each pair (or encoded pair) from batched forward passes, blocking, without the batcher.

        For the transformers engine only (the benchmark's raw rate, tests); the vllm engine is awaited through
        :meth:`score`."""
        if not isinstance(self._scorer, TorchScorer | ProcessTorchScorer):
            raise TypeError(f"forward() runs the transformers engine in this thread; this is {self.engine}: score()")
        return self._scorer.forward(self._encode(pairs))

    def _encode(self, pairs: Sequence[Scorable]) -> list[list[int]]:
        """Pairs tokenised here, once; rows validation already encoded are used as they are."""
        return [item if isinstance(item, list) else self._input.ids(*item) for item in pairs]

    async def score(self, pairs: Sequence[Scorable]) -> list[float]:
        """One logit per pair (or its ids from :meth:`ids`), in order; raises Overloaded when the queue is full."""
        return await self._submit(pairs)

    async def score_steps(self, items: Sequence[StepsItem]) -> list[list[StepScore]]:
        """One score per step prefix of each item; all prefixes are submitted together and share forward passes."""
        ends = [item.ends(self.step_ends) for item in items]
        pairs = [
            (item.problem, item.solution[:end])
            for item, item_ends in zip(items, ends, strict=True)
            for end in item_ends
        ]
        scores = iter(await self._submit(pairs))
        return [[StepScore(end, next(scores)) for end in item_ends] for item_ends in ends]

    async def _submit(self, pairs: Sequence[Scorable]) -> list[float]:
        self._in_flight += 1
        self._idle.clear()
        try:
            return await self._batcher.submit_many(pairs)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def _run_batch(self, pairs: list[Scorable]) -> list[float]:
        if all(isinstance(item, list) for item in pairs):
            return await self._scorer.score(pairs)  # type: ignore[arg-type]
        # Step prefixes (and pairs from in-process callers) are tokenised off the event loop.
        return await self._scorer.score(await asyncio.to_thread(self._encode, pairs))


def resolve_engine(engine: str) -> str:
    """``auto``: vllm on a GPU (when vLLM is installed), else hf; ``hf`` and ``vllm`` as given."""
    if engine != "auto":
        return engine
    if not torch.cuda.is_available():
        return "hf"
    try:
        import vllm  # noqa: F401
    except ImportError:
        return "hf"
    return "vllm"


def resolve_device(device: str) -> str:
    """``auto``: the GPU when torch sees one, else the CPU; ``cpu`` and ``cuda`` as given."""
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_hf_worker(hf_worker: str, device: str) -> str:
    """``auto``: the child process on the CPU (its forward passes never wait for the lock that gRPC's call handling
    holds), the thread on a GPU (a child would hold a second CUDA context); ``thread`` and ``process`` as given."""
    if hf_worker != "auto":
        return hf_worker
    return "process" if device == "cpu" else "thread"


def load_verifier(
    path: Path,
    describe: Callable[[datetime], WeightsInfo] | None = None,
    *,
    max_batch_size: int = 64,
    max_delay_ms: float = 0.0,
    max_queue_size: int = 1024,
    torch_threads: int = 1,
    prompts: Callable[[PreTrainedTokenizerBase], PromptFormat] | None = None,
    device: str = "cpu",
    engine: str = "hf",
    vllm_gpu_memory_utilization: float = 0.4,
    hf_worker: str = "auto",
) -> VerifierModel:
    """Load ``path`` once (float32, no gradients) into a VerifierModel (not started yet), blocking.

    ``describe(loaded_at)`` says what responses report; by default the plain path, version 0, its manifest sha256
    (the tokenizer's hash is added either way). ``prompts(tokenizer)`` gives the task's prompt format for the
    checkpoint's tokenizer; by default the toy task, chat template when the tokenizer has one. ``engine``: hf (the
    transformers model on ``device``: a torch device, or ``auto`` for the GPU when torch sees one), vllm (vLLM's
    pooling runner, on the platform vLLM finds; ``vllm_gpu_memory_utilization`` of the GPU, so that a hot swap's
    second engine fits beside the first), or auto (:func:`resolve_engine`). ``hf_worker``: where the hf engine's
    forward passes run: a thread of this process, a child process of their own (:mod:`forward_process`), or auto
    (:func:`resolve_hf_worker`).
    """
    hf_logging.disable_progress_bar()
    engine = resolve_engine(engine)
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    if config.num_labels != 1:
        raise ValueError(f"{path}: a verifier has one output (num_labels=1), this has {config.num_labels}")
    if engine == "vllm":
        window = context_window(config, tokenizer)
        scorer = VllmScorer.start(
            path,
            context_window=window,
            max_num_seqs=max_batch_size,
            gpu_memory_utilization=vllm_gpu_memory_utilization,
        )
        make_scorer: Callable[[VerifierInput], RowScorer] = lambda _input: scorer  # noqa: E731
        log.info("loaded verifier %s with vLLM's pooling runner", path)
    elif engine == "hf":
        device = resolve_device(device)
        hf_worker = resolve_hf_worker(hf_worker, device)
        if hf_worker == "process":

            def make_scorer(verifier_input: VerifierInput) -> RowScorer:
                scorer = ProcessTorchScorer.start(
                    path, pad_id=verifier_input.pad_id, torch_threads=torch_threads, device=device
                )
                log.info(
                    "loaded verifier %s (%d parameters) on %s in a child process, %d torch threads",
                    *(path, scorer.parameters, device, torch_threads),
                )
                return scorer

        elif hf_worker == "thread":
            model = load_classifier(path, torch_threads=torch_threads, device=device)
            parameters = model.num_parameters()
            log.info(
                "loaded verifier %s (%d parameters) on %s, %d torch threads", path, parameters, device, torch_threads
            )
            make_scorer = functools.partial(TorchScorer, model, torch_threads=torch_threads)
        else:
            raise ValueError(f"unknown hf worker {hf_worker!r}: thread, process or auto")
    else:
        raise ValueError(f"unknown verifier engine {engine!r}: hf, vllm or auto")
    loaded_at = datetime.now(UTC)
    if describe is None:
        weights = WeightsInfo("verifier", 0, directory_sha256(path), loaded_at, str(path))
    else:
        weights = describe(loaded_at)
    weights = dataclasses.replace(weights, tokenizer_sha256=tokenizer_sha256(tokenizer))
    return VerifierModel(
        make_scorer,
        config,
        tokenizer,
        weights,
        max_batch_size=max_batch_size,
        max_delay_ms=max_delay_ms,
        max_queue_size=max_queue_size,
        prompts=prompts(tokenizer) if prompts is not None else None,
    )
