"""EngineAdmission, the gate in front of an engine that forms its own batches: what it adds to PassThrough's checks
(tests/unit/common/test_pass_through.py) for the weak model's vllm engine, whose two calls share one count."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from prometheus_client import REGISTRY

from services.common.admission import EngineAdmission
from services.common.errors import NotReady, Overloaded


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value("legibility_batch_queue_depth", {"batcher": name})


async def test_calls_of_any_kind_share_one_count_and_the_gauge_follows_it() -> None:
    admission = EngineAdmission("test-shared", max_running=2, max_queue_size=2)
    admission.open()
    release = asyncio.Event()

    async def held(value: str) -> str:
        await release.wait()
        return value

    first = asyncio.create_task(admission.run(3, lambda: held("continue"), what="engine.continue"))
    second = asyncio.create_task(admission.run(1, lambda: held("logprobs"), what="engine.logprobs"))
    await settle()
    assert admission.queue_depth == 2 and gauge("test-shared") == 2  # 4 in flight, 2 run at once
    with pytest.raises(Overloaded, match=r"^engine\.logprobs: 2 items waiting, 1 more would pass max_queue_size 2"):
        await admission.run(1, lambda: held("refused"), what="engine.logprobs")
    release.set()
    assert await asyncio.gather(first, second) == ["continue", "logprobs"]
    assert admission.queue_depth == 0 and gauge("test-shared") == 0


async def test_refused_work_is_never_started() -> None:
    admission = EngineAdmission("test-refused", max_running=1, max_queue_size=1)
    started: list[int] = []

    async def work() -> None:
        started.append(1)

    with pytest.raises(NotReady, match=r"^test-refused: not running"):  # not opened yet
        await admission.run(1, work)
    admission.open()
    with pytest.raises(Overloaded):
        await admission.run(3, work)  # 2 would wait, 1 may
    assert started == []  # no coroutine was made, so none is left never awaited
    await admission.run(2, work)
    assert started == [1]


async def test_close_fails_running_work_with_not_ready_naming_the_call() -> None:
    admission = EngineAdmission("test-close", max_running=4, max_queue_size=4)
    admission.open()
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    call = asyncio.create_task(admission.run(1, forever, what="engine.continue"))
    await settle()
    await admission.close()
    with pytest.raises(NotReady, match=r"^engine\.continue: stopped"):
        await call
    assert cancelled.is_set() and admission.queue_depth == 0
    with pytest.raises(NotReady, match="not running"):
        await admission.run(1, forever)


async def test_a_caller_that_once_caught_a_cancel_still_gets_not_ready_on_close() -> None:
    """Only a cancel request made during the call is the caller's own: one it caught before (without uncancel)
    leaves close() failing the call with NotReady, and a new one still cancels it."""
    admission = EngineAdmission("test-caught", max_running=4, max_queue_size=4)
    admission.open()

    async def forever() -> None:
        await asyncio.Event().wait()

    async def caller() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # caught, not uncancelled: cancelling() stays 1
            await asyncio.sleep(3600)
        await admission.run(1, forever, what="engine.continue")

    call = asyncio.create_task(caller())
    await settle()
    call.cancel()
    await settle()
    await admission.close()
    with pytest.raises(NotReady, match=r"^engine\.continue: stopped"):
        await call

    admission.open()
    again = asyncio.create_task(caller())
    await settle()
    again.cancel()  # caught
    await settle()
    again.cancel()  # during the call
    with pytest.raises(asyncio.CancelledError):
        await again
    assert admission.queue_depth == 0


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_running and max_queue_size must be >= 1"):
        EngineAdmission("test-bounds", max_running=1, max_queue_size=0)
