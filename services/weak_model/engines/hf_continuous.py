"""Continuous batching for the transformers engine's ``Continue``: one decoding loop that requests join and leave.

With micro-batches, a batch decoded until its longest continuation ended: a one-word request that arrived while a
50-token one was decoding waited for all of it, and then for its own batch's longest. Here every request joins the
running :class:`~services.decoding.hf_batch.DecodingBatch` within a few steps of its arrival (as vLLM schedules),
its KV states prefilled from the prefix cache, and its call returns the step its continuation ends; the row leaves
at the step after (its states to the prefix cache). An idle decoder waits ``max_delay_ms`` after a first request
for others to start with it. At most ``max_rows`` rows decode together; beyond that, requests wait, and past
``max_queue_size`` waiting a call is refused at once (``RESOURCE_EXHAUSTED``). A call cancelled by its client leaves
the queue at once and the batch at the next step. Each step holds the engine's model lock, so LogProbs batches run
between steps.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass

from prometheus_client import Gauge

from services.common.admission import QUEUE_DEPTH, admit
from services.common.batching import BATCH_SIZE
from services.common.errors import NotReady
from services.common.tasks import cancel_and_wait, wait_for_event
from services.decoding.hf_batch import DecodingBatch, Generated
from services.decoding.requests import SegmentRequest

JOIN_WITHIN_STEPS = 4
"""A request waits at most this many steps of a running batch before it joins."""

ROWS = Gauge("legibility_continuous_batch_rows", "Rows in a continuous decoding batch.", ["batcher"])


Step = Callable[
    [DecodingBatch, list[tuple[Hashable, SegmentRequest]], list[Hashable], list[Hashable]],
    Awaitable[list[tuple[Hashable, Generated]]],
]
"""``step(batch, join, leave, drop)``: run ``batch.step`` off the event loop, holding the model (the engine's)."""


@dataclass(eq=False)
class _Call:
    request: SegmentRequest
    future: asyncio.Future[Generated]
    arrived: float
    step: int
    """The decoder's step count when it arrived."""


class ContinuousDecoder:
    """Decodes ``Continue`` requests in one running batch; see the module."""

    def __init__(
        self,
        name: str,
        new_batch: Callable[[], DecodingBatch],
        step: Step,
        *,
        max_rows: int,
        max_queue_size: int,
        max_delay_ms: float = 0.0,
    ) -> None:
        if max_rows < 1 or max_queue_size < 1 or max_delay_ms < 0:
            raise ValueError("max_rows and max_queue_size must be >= 1, max_delay_ms >= 0")
        self.name = name
        self.max_rows = max_rows
        self.max_delay_s = max_delay_ms / 1000
        self.max_queue_size = max_queue_size
        self._new_batch = new_batch
        self._step = step
        self._waiting: deque[_Call] = deque()
        self._decoding: dict[Hashable, _Call] = {}
        self._keys = itertools.count()
        self._steps = 0
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._depth = QUEUE_DEPTH.labels(name)
        self._sizes = BATCH_SIZE.labels(name)
        self._rows = ROWS.labels(name)

    @property
    def queue_depth(self) -> int:
        """Requests admitted and not yet decoding."""
        return len(self._waiting)

    @property
    def decoding(self) -> int:
        """Requests in the batch now."""
        return len(self._decoding)

    async def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name=f"continuous-{self.name}")

    async def stop(self) -> None:
        """Stop decoding; every waiting or decoding call fails with NotReady (nothing hangs)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            await cancel_and_wait(worker)
        self._fail([*self._waiting, *self._decoding.values()], NotReady(f"{self.name}: decoder stopped"))
        self._waiting.clear()
        self._decoding.clear()
        self._depth.set(0)
        self._rows.set(0)

    async def submit_many(self, requests: Sequence[SegmentRequest]) -> list[Generated]:
        """Continuations of ``requests`` in order; all are admitted or none (Overloaded)."""
        if self._worker is None:
            raise NotReady(f"{self.name}: decoder is not running")
        admit(self.name, len(self._waiting), len(requests), self.max_queue_size)
        loop = asyncio.get_running_loop()
        calls = [_Call(request, loop.create_future(), loop.time(), self._steps) for request in requests]
        self._waiting.extend(calls)
        self._depth.set(len(self._waiting))
        self._arrived.set()
        try:
            return list(await asyncio.gather(*(call.future for call in calls)))
        except BaseException:
            for call in calls:  # one failed or the caller was cancelled: the others need not decode
                call.future.cancel()
            self._forget(calls)
            raise

    def _forget(self, calls: list[_Call]) -> None:
        """Take calls that no longer wait for a result out of the queue, so their slots admit others at once."""
        gone = set(calls)  # _Call compares by identity (eq=False)
        if not gone.isdisjoint(self._waiting):
            self._waiting = deque(call for call in self._waiting if call not in gone)
            self._depth.set(len(self._waiting))

    async def _run(self) -> None:
        batch = self._new_batch()
        leave: list[Hashable] = []
        while True:
            if not len(batch):
                await self._gather_burst()
            drop = [key for key, call in self._decoding.items() if call.future.done()]  # cancelled by its caller
            for key in drop:
                del self._decoding[key]
            join: list[tuple[Hashable, SegmentRequest]] = []
            joining = self._joining(batch)
            while joining and self._waiting and len(self._decoding) + len(join) < self.max_rows:
                call = self._waiting.popleft()
                if not call.future.done():
                    key = next(self._keys)
                    join.append((key, call.request))
                    self._decoding[key] = call
            self._depth.set(len(self._waiting))
            self._steps += 1
            try:
                ended = await self._step(batch, join, leave, drop)
            except Exception as error:  # a failed step fails the calls decoding in it; the next batch starts clean
                self._fail(list(self._decoding.values()), error)
                self._decoding.clear()
                batch, leave = self._new_batch(), []
                continue
            if join:
                self._sizes.observe(len(join))
            self._rows.set(batch.running)
            leave = []
            for key, generated in ended:
                call = self._decoding.pop(key)
                leave.append(key)
                if not call.future.done():
                    call.future.set_result(generated)

    def _joining(self, batch: DecodingBatch) -> bool:
        """Whether waiting requests join now. A join copies the whole batch's KV states into a larger one, so
        while rows are decoding, requests gather until there are a quarter as many as are running or the oldest
        has waited JOIN_WITHIN_STEPS steps (each join of one or two rows at 64 clients cost more than the step)."""
        if not self._waiting:
            return False
        running = batch.running
        waited = self._steps - self._waiting[0].step
        return not running or len(self._waiting) * 4 >= running or waited >= JOIN_WITHIN_STEPS

    async def _gather_burst(self) -> None:
        """Idle: wait for a request, then up to ``max_delay_ms`` from its arrival for others to start with it (one
        prefill for a burst, as a micro-batch would); a running batch takes arrivals at its next step instead."""
        while not self._waiting:
            self._arrived.clear()
            await self._arrived.wait()
        loop = asyncio.get_running_loop()
        deadline = self._waiting[0].arrived + self.max_delay_s
        while len(self._waiting) < self.max_rows and (remaining := deadline - loop.time()) > 0:
            self._arrived.clear()
            await wait_for_event(self._arrived, remaining)

    @staticmethod
    def _fail(calls: list[_Call], error: BaseException) -> None:
        for call in calls:
            if not call.future.done():
                call.future.set_exception(error)
