"""MicroBatcher: batch sizes, delay, bounded admission, error propagation, cancellation, stop, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from prometheus_client import REGISTRY

from services.common.batching import MicroBatcher
from services.common.errors import NotReady, Overloaded
from tests.support.loop_turns import turns, within_turns


class Recorder:
    """A batch function that records every batch, can be held on an event, and can be told to fail."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.entered = asyncio.Event()
        self.fail_with: Exception | None = None

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.entered.set()
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [item * 10 for item in items]


@pytest.fixture
async def make() -> AsyncIterator[Callable[..., MicroBatcher[int, int]]]:
    made: list[MicroBatcher[int, int]] = []

    def factory(fn: Recorder, name: str = "test", **knobs: float) -> MicroBatcher[int, int]:
        settings = {"max_batch_size": 4, "max_delay_ms": 20, "max_queue_size": 64} | knobs
        batcher = MicroBatcher(name, fn, **settings)  # type: ignore[arg-type]
        made.append(batcher)
        return batcher

    yield factory
    for batcher in made:
        await batcher.stop()


async def busy(
    make: Callable[..., MicroBatcher[int, int]], **knobs: float
) -> tuple[Recorder, MicroBatcher[int, int], asyncio.Future[int]]:
    """A started batcher whose first batch, [0], is in the batch function and held there until ``fn.release``."""
    fn = Recorder()
    fn.release.clear()
    batcher = make(fn, **knobs)
    await batcher.start()
    first = asyncio.ensure_future(batcher.submit(0))
    await fn.entered.wait()
    return fn, batcher, first


async def test_concurrent_items_fill_batches_up_to_max_batch_size(make) -> None:
    fn = Recorder()
    batcher = make(fn, max_batch_size=4, max_delay_ms=50)
    await batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert results == [i * 10 for i in range(10)]
    assert [len(b) for b in fn.batches] == [4, 4, 2]
    assert sorted(i for b in fn.batches for i in b) == list(range(10))


async def test_an_idle_model_takes_a_lone_item_at_once(make) -> None:
    fn = Recorder()
    batcher = make(fn, max_batch_size=8, max_delay_ms=3_600_000)
    await batcher.start()
    # Nothing else runs: waiting for company would only delay it (the hour-long delay would trip the timeout).
    assert await asyncio.wait_for(batcher.submit(1), timeout=60) == 10
    assert fn.batches == [[1]]


async def test_while_a_batch_runs_arrivals_gather_until_the_model_is_idle(make) -> None:
    # Batch [0] holds the model; a second slot is free.
    fn, batcher, first = await busy(make, max_batch_size=8, max_delay_ms=3_600_000, max_concurrent_batches=2)
    later = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2)]
    await asyncio.sleep(0.05)
    third = asyncio.ensure_future(batcher.submit(3))
    await asyncio.sleep(0.05)
    assert fn.batches == [[0]] and batcher.queue_depth == 3  # gathering while the model is busy
    fn.release.set()  # [0] ends: the model is idle, the gathered items go at once (not after the hour)
    assert await asyncio.wait_for(asyncio.gather(first, *later, third), timeout=60) == [0, 10, 20, 30]
    assert fn.batches == [[0], [1, 2, 3]]


async def test_while_a_batch_runs_the_next_one_goes_after_max_delay(make) -> None:
    fn, batcher, first = await busy(make, max_batch_size=8, max_delay_ms=50, max_concurrent_batches=2)
    second = asyncio.ensure_future(batcher.submit(1))
    while len(fn.batches) < 2:  # [0] still holds the model: [1] goes once it has waited max_delay
        await asyncio.sleep(0.01)
    assert fn.batches == [[0], [1]] and not first.done()
    fn.release.set()
    assert await asyncio.gather(first, second) == [0, 10]


async def test_a_full_batch_runs_without_waiting_for_the_delay(make) -> None:
    fn = Recorder()
    batcher = make(fn, max_batch_size=3, max_delay_ms=3_600_000)
    await batcher.start()
    # Waiting for the hour-long delay would trip the timeout.
    assert await asyncio.wait_for(batcher.submit_many([1, 2, 3]), timeout=60) == [10, 20, 30]
    assert fn.batches == [[1, 2, 3]]


async def test_overload_at_exactly_max_queue_size(make) -> None:
    # Item 0 is in the batch function, no longer queued.
    fn, batcher, running = await busy(make, max_batch_size=1, max_delay_ms=0, max_queue_size=3)
    queued = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 2, 3)]
    await asyncio.sleep(0)
    assert batcher.queue_depth == 3
    with pytest.raises(Overloaded, match="max_queue_size 3"):
        await asyncio.wait_for(batcher.submit(4), timeout=60)  # the batch function is held: waiting would never end
    assert batcher.queue_depth == 3
    fn.release.set()
    assert await asyncio.gather(running, *queued) == [0, 10, 20, 30]
    assert fn.batches == [[0], [1], [2], [3]]


async def test_submit_many_is_admitted_whole_or_not_at_all(make) -> None:
    fn, batcher, running = await busy(make, max_batch_size=1, max_delay_ms=0, max_queue_size=3)
    two = asyncio.ensure_future(batcher.submit_many([1, 2]))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded):
        await batcher.submit_many([3, 4])  # 2 + 2 > 3: neither item is queued
    assert batcher.queue_depth == 2
    fn.release.set()
    assert await running == 0
    assert await two == [10, 20]
    assert [i for b in fn.batches for i in b] == [0, 1, 2]


async def test_an_error_fails_every_item_of_its_batch_and_the_next_batch_works(make) -> None:
    fn = Recorder()
    fn.fail_with = ValueError("model broke")
    batcher = make(fn, max_batch_size=3, max_delay_ms=20)
    await batcher.start()
    outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    assert [type(o) for o in outcomes] == [ValueError] * 3
    assert all(str(o) == "model broke" for o in outcomes)
    fn.fail_with = None
    assert await batcher.submit(7) == 70
    assert [len(b) for b in fn.batches] == [3, 1]


async def test_wrong_number_of_results_fails_the_batch(make) -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    batcher = make(short, max_batch_size=2, max_delay_ms=20)  # type: ignore[arg-type]
    await batcher.start()
    outcomes = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
    assert all(isinstance(o, RuntimeError) and "1 results for 2" in str(o) for o in outcomes)


async def test_a_caller_cancelled_while_queued_is_skipped(make) -> None:
    fn, batcher, running = await busy(make, max_batch_size=4, max_delay_ms=0, max_queue_size=4)
    keep = [asyncio.ensure_future(batcher.submit(i)) for i in (1, 3)]
    dropped = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0)
    assert batcher.queue_depth == 3
    dropped.cancel()
    await asyncio.sleep(0)
    assert batcher.queue_depth == 2  # its slot is free before the worker gets to it
    fn.release.set()
    assert await asyncio.gather(running, *keep) == [0, 10, 30]
    assert dropped.cancelled()
    assert fn.batches == [[0], [1, 3]]


async def test_stop_fails_waiting_and_running_items_with_not_ready(make) -> None:
    _, batcher, running = await busy(make, max_batch_size=1, max_delay_ms=0)
    waiting = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0)
    await batcher.stop()
    outcomes = await asyncio.gather(running, waiting, return_exceptions=True)
    assert [type(o) for o in outcomes] == [NotReady, NotReady]
    assert batcher.queue_depth == 0
    with pytest.raises(NotReady):
        await batcher.submit(2)


async def test_metrics_record_batch_sizes_and_queue_depth(make) -> None:
    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"batcher": "metrics-test", **labels}) or 0.0

    before_count = sample("legibility_batch_size_count")
    before_sum = sample("legibility_batch_size_sum")
    fn = Recorder()
    batcher = make(fn, name="metrics-test", max_batch_size=4, max_delay_ms=20)
    await batcher.start()
    await asyncio.gather(*(batcher.submit(i) for i in range(6)))
    assert sample("legibility_batch_size_count") - before_count == 2
    assert sample("legibility_batch_size_sum") - before_sum == 6
    assert sample("legibility_batch_size_bucket", le="2.0") == 1  # the batch of 2; the other had 4
    assert sample("legibility_batch_queue_depth") == 0


@pytest.mark.parametrize(("slots", "calls_while_held"), [(1, 1), (2, 2), (3, 3)])
async def test_an_engine_that_batches_itself_gets_the_next_batches_while_one_runs(
    make: Callable[..., MicroBatcher[int, int]], slots: int, calls_while_held: int
) -> None:
    """max_concurrent_batches: with 1, the second batch waits for the first to return; with N, N run at once."""
    recorder = Recorder()
    recorder.release.clear()
    batcher = make(recorder, max_batch_size=2, max_delay_ms=0, max_concurrent_batches=slots)
    await batcher.start()
    waiting = [asyncio.ensure_future(batcher.submit(i)) for i in range(6)]  # three batches of 2
    for _ in range(50):
        await asyncio.sleep(0.01)
    assert len(recorder.batches) == calls_while_held
    recorder.release.set()
    assert await asyncio.gather(*waiting) == [0, 10, 20, 30, 40, 50]
    assert sorted(item for batch in recorder.batches for item in batch) == list(range(6))
    assert all(len(batch) == 2 for batch in recorder.batches)


async def test_stop_fails_items_of_every_running_batch(make: Callable[..., MicroBatcher[int, int]]) -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher = make(recorder, max_batch_size=1, max_delay_ms=0, max_concurrent_batches=2)
    await batcher.start()
    running = [asyncio.ensure_future(batcher.submit(i)) for i in range(3)]
    while len(recorder.batches) < 2:
        await asyncio.sleep(0.01)
    await batcher.stop()
    outcomes = await asyncio.gather(*running, return_exceptions=True)
    assert all(isinstance(outcome, NotReady) for outcome in outcomes)


@pytest.mark.parametrize("ticks", range(8))
async def test_stop_ends_when_a_batch_finishes_in_the_same_instant(
    make: Callable[..., MicroBatcher[int, int]], ticks: int
) -> None:
    """The worker gathering a second batch is told to stop just as the first finishes and wakes it. On Python 3.11
    ``asyncio.wait_for`` dropped the cancellation when the wake-up came first, so the worker ran on and stop() hung
    (a verifier hot swap closing the old model did, and the service's shutdown after it)."""
    recorder = Recorder()
    recorder.release.clear()
    batcher = make(recorder, max_batch_size=4, max_delay_ms=60_000, max_concurrent_batches=2)
    await batcher.start()
    first = asyncio.ensure_future(batcher.submit(0))
    await recorder.entered.wait()
    second = asyncio.ensure_future(batcher.submit(1))  # gathers: the model is busy, the delay is a minute
    await turns(3)
    recorder.release.set()  # the first batch returns and sets the worker's wake-up
    await turns(ticks)
    stop = await within_turns(batcher.stop())
    assert stop.done(), "stop() is still waiting for the batcher's worker"
    await stop
    assert await first == 0
    outcome = (await asyncio.gather(second, return_exceptions=True))[0]
    assert outcome == 10 or isinstance(outcome, NotReady)
