"""wait_for_event and cancel_and_wait: a stop always ends, and never eats its caller's own cancellation."""

from __future__ import annotations

import asyncio

import pytest

from services.common.tasks import cancel_and_wait, wait_for_event


async def _forever() -> None:
    await asyncio.sleep(3600)


async def test_wait_for_event_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_for_event(event, 0.01) is False
    event.set()
    assert await wait_for_event(event, 0.01) is True


async def test_a_cancellation_landing_as_the_event_is_set_is_kept() -> None:
    """asyncio.wait_for on 3.11 returned normally here, and the loop around it ran on after being stopped."""
    event = asyncio.Event()
    woke: list[bool] = []

    async def worker() -> None:
        while True:
            event.clear()
            woke.append(await wait_for_event(event, 60))

    task = asyncio.ensure_future(worker())
    await asyncio.sleep(0)
    event.set()
    task.cancel()
    for _ in range(10):
        await asyncio.sleep(0)
    assert task.cancelled() and woke == []


async def test_cancel_and_wait_drops_the_tasks_own_cancellation() -> None:
    task = asyncio.ensure_future(_forever())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled()


async def test_the_callers_own_cancellation_is_raised() -> None:
    """A caller cancelled while it waits for the task to end must not carry on as if never cancelled."""
    ending = asyncio.Event()

    async def slow_to_end() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await ending.wait()  # cleanup in progress when the caller is cancelled

    task = asyncio.ensure_future(slow_to_end())
    await asyncio.sleep(0)
    went_on: list[bool] = []

    async def stopper() -> None:
        await cancel_and_wait(task)
        went_on.append(True)

    caller = asyncio.ensure_future(stopper())
    await asyncio.sleep(0)
    caller.cancel()
    await asyncio.sleep(0)
    ending.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert went_on == [] and task.done()


async def test_a_caller_already_handling_a_cancellation_still_stops_the_task() -> None:
    """E.g. a hot swap stopped mid-drain closes the old model before re-raising: the close must go on."""
    helper = asyncio.ensure_future(_forever())
    closed: list[bool] = []

    async def owner() -> None:
        try:
            await _forever()
        except asyncio.CancelledError:
            await cancel_and_wait(helper)
            closed.append(helper.cancelled())
            raise

    task = asyncio.ensure_future(owner())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed == [True]


async def test_an_error_the_task_ended_with_is_raised_unless_swallowed() -> None:
    async def crash() -> None:
        raise RuntimeError("boom")

    for swallow in (False, True):
        task = asyncio.ensure_future(crash())
        await asyncio.sleep(0)
        if swallow:
            await cancel_and_wait(task, swallow_errors=True)
        else:
            with pytest.raises(RuntimeError, match="boom"):
                await cancel_and_wait(task)
