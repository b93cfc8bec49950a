"""The retraining port: a game round hands its verifier training to a :class:`Retrainer` and waits for the version.

``in_process`` trains in a thread of the learner (the embedded default); ``queue`` puts the request on a Redis
Stream for ``legibility worker train-verifier`` (see :mod:`services.jobs.verifier_training.queue`). Both train from
the same :class:`RetrainRequest` with the same settings, so a round gets the same verifier either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from services.common.settings import StoreSettings
from services.jobs.verifier_training.fulfil import train_for_request
from services.jobs.verifier_training.queue import RetrainQueue
from services.jobs.verifier_training.requests import RetrainRequest, RetrainResult

StatusCallback = Callable[[dict[str, str]], None]
"""Progress of a request: ``queued``, then the worker's status hash (worker, attempt, step, steps, loss, error)."""


class Retrainer(Protocol):
    async def retrain(self, request: RetrainRequest, out_dir: Path, on_status: StatusCallback) -> RetrainResult:
        """Train and publish ``request.target_version`` (or say why not); raises RetrainFailed when given up."""
        ...


class InProcessRetrainer:
    """The training job in a worker thread of the learner (it publishes through its own event loop)."""

    def __init__(self, store: StoreSettings, torch_threads: int) -> None:
        self.store = store
        self.torch_threads = torch_threads

    async def retrain(self, request: RetrainRequest, out_dir: Path, on_status: StatusCallback) -> RetrainResult:
        steps = str(request.training.steps)
        on_status({"worker": "in_process", "attempt": "1", "steps": steps, "step": "0"})
        return await asyncio.to_thread(
            train_for_request, request, self.store, out_dir, self.torch_threads, "in_process"
        )


class QueueRetrainer:
    """A request on the retraining stream, submitted once, awaited with the worker's progress relayed."""

    def __init__(self, store: StoreSettings, stream: str, timeout_s: float) -> None:
        self.store = store
        self.stream = stream
        self.timeout_s = timeout_s

    async def retrain(self, request: RetrainRequest, out_dir: Path, on_status: StatusCallback) -> RetrainResult:
        client = self.store.redis_client()
        try:
            queue = RetrainQueue(client, self.stream)
            if await queue.submit(request):
                on_status({"queued": self.stream})
            return await queue.wait(request.request_id, self.timeout_s, on_status)
        finally:
            await client.aclose()
