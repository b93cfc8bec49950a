"""PassThrough, the batcher's interface for an engine that batches by itself: every submit goes to the engine at
once, admission is bounded, a stop fails what runs with NotReady, a cancelled caller's rows are dropped."""

from __future__ import annotations

import asyncio

import pytest

from services.common.batching import PassThrough
from services.common.errors import NotReady, Overloaded


class Engine:
    """A batch function that records what it was given and holds every call until released."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.release = asyncio.Event()
        self.cancelled = 0

    async def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(items)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return [item * 10 for item in items]


async def settle() -> None:
    """Let the submit tasks and the engine calls they start run up to their first wait."""
    for _ in range(3):
        await asyncio.sleep(0)


async def started(engine: Engine, max_batch_size: int = 4, max_queue_size: int = 3) -> PassThrough[int, int]:
    batcher = PassThrough("test", engine, max_batch_size=max_batch_size, max_queue_size=max_queue_size)
    await batcher.start()
    return batcher


async def test_every_submit_reaches_the_engine_at_once_unmerged() -> None:
    engine = Engine()
    batcher = await started(engine)
    calls = [asyncio.create_task(batcher.submit_many([i, i + 100])) for i in range(3)]
    await settle()
    assert engine.calls == [[0, 100], [1, 101], [2, 102]]  # no gathering, no delay: the engine batches them
    engine.release.set()
    assert await asyncio.gather(*calls) == [[0, 1000], [10, 1010], [20, 1020]]
    assert batcher.queue_depth == 0


async def test_items_past_what_the_engine_runs_wait_and_past_the_queue_are_refused() -> None:
    engine = Engine()
    batcher = await started(engine, max_batch_size=4, max_queue_size=3)
    running = asyncio.create_task(batcher.submit_many(list(range(6))))  # 4 run, 2 wait
    await settle()
    assert batcher.queue_depth == 2
    first = asyncio.create_task(batcher.submit_many([7]))  # 3 waiting: at the bound, admitted
    await settle()
    assert batcher.queue_depth == 3
    with pytest.raises(Overloaded, match="3 items waiting, 1 more would pass max_queue_size 3"):
        await batcher.submit_many([8])
    assert len(engine.calls) == 2  # the refused one never reached the engine
    engine.release.set()
    assert await running == [0, 10, 20, 30, 40, 50]
    assert await first == [70]
    assert batcher.queue_depth == 0


async def test_a_cancelled_caller_cancels_its_rows_in_the_engine() -> None:
    engine = Engine()
    batcher = await started(engine)
    call = asyncio.create_task(batcher.submit_many([1]))
    await settle()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert engine.cancelled == 1
    assert batcher.queue_depth == 0


async def test_stop_fails_running_calls_with_not_ready_and_refuses_new_ones() -> None:
    engine = Engine()
    batcher = await started(engine)
    call = asyncio.create_task(batcher.submit_many([1]))
    await settle()
    await batcher.stop()
    with pytest.raises(NotReady, match="stopped"):
        await call
    assert engine.cancelled == 1
    with pytest.raises(NotReady, match="not running"):
        await batcher.submit_many([2])


async def test_before_start_submits_are_not_ready() -> None:
    batcher = PassThrough("test", Engine(), max_batch_size=4, max_queue_size=4)
    with pytest.raises(NotReady):
        await batcher.submit_many([1])
    with pytest.raises(ValueError, match="max_running and max_queue_size"):
        PassThrough("test", Engine(), max_batch_size=0, max_queue_size=4)
