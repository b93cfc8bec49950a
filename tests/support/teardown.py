"""Bounded teardown steps: a stop that hangs fails its test naming the step, with where every asyncio task waits.

pytest-timeout's dump shows threads only, so a hung ``await`` shows there as the event loop idling in ``select``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

STEP_TIMEOUT_S = 90.0


def _first(obj: object, attributes: tuple[str, ...]) -> object | None:
    return next((getattr(obj, name) for name in attributes if hasattr(obj, name)), None)


def _await_chain(awaitable: object) -> list[str]:
    """The frames of a suspended coroutine down its ``await`` chain, ending at what it waits on."""
    lines = []
    while awaitable is not None:
        frame = _first(awaitable, ("cr_frame", "ag_frame", "gi_frame"))
        if frame is None:
            lines.append(f"    waiting on {awaitable!r}")
            break
        lines.append(f"    {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        awaitable = _first(awaitable, ("cr_await", "ag_await", "gi_yieldfrom"))
    return lines


def task_stacks() -> str:
    """Every other pending task of the running loop, each with its await chain."""
    lines = []
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task():
            lines += [f"  task {task.get_name()}:", *_await_chain(task.get_coro())]
    return "\n".join(lines)


async def bounded(step: str, awaitable: Awaitable[object], timeout_s: float = STEP_TIMEOUT_S) -> None:
    """Await one teardown step; past ``timeout_s`` fail naming it, with the loop's tasks and where they wait."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait([task], timeout=timeout_s)
    if not done:
        stacks = task_stacks()  # before cancelling, which would unwind the hung await
        task.cancel()
        raise AssertionError(f"teardown step {step!r} did not finish in {timeout_s:g} s; pending tasks:\n{stacks}")
    task.result()
