"""Stopping background tasks so that a stop always ends and never eats its caller's own cancellation.

Two traps of Python 3.11's asyncio, both seen as a teardown that hung with the event loop idle:

- ``asyncio.wait_for`` swallows a cancellation that arrives in the instant the awaited thing completes
  (python/cpython#86296, fixed in 3.12 by rewriting it on ``asyncio.timeout``): a worker loop waiting with it, told
  to stop just as work arrives, runs on, and whoever awaits the worker waits forever. :func:`wait_for_event` waits
  with ``asyncio.timeout``, which counts cancellations and keeps an outside one.
- ``with suppress(CancelledError): await task`` after ``task.cancel()`` also swallows a cancellation of the caller
  that lands during the await: the caller then carries on as if never cancelled. :func:`cancel_and_wait` re-raises
  it: ``Task.cancelling()`` counts the caller's cancellations, and one more than on entry is the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib


async def wait_for_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until ``event`` is set or ``timeout_s`` passes; True when it was set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
            return True
    return False


class NewCancels:
    """The current task's cancel requests from the moment this is made: :meth:`arrived` is True once one more came.

    Compared with the count at that moment, not with zero: a task may already hold a request it caught without
    ``uncancel()`` (e.g. one closing what it started before re-raising), and that one is not the new one asked about.
    A request that something below swallowed is still counted by ``Task.cancelling()``, so it is seen too.
    """

    def __init__(self) -> None:
        self._task = asyncio.current_task()
        self._before = self._task.cancelling() if self._task is not None else 0

    def arrived(self) -> bool:
        return self._task is not None and self._task.cancelling() > self._before


async def cancel_and_wait(task: asyncio.Future[object], *, swallow_errors: bool = False) -> None:
    """Cancel ``task`` and wait until it has ended.

    Its own CancelledError is expected and dropped; one aimed at the caller is raised. An exception the task ended
    with is raised too, unless ``swallow_errors`` (for tasks that report their own crash when it happens).
    """
    caller = NewCancels()  # a caller already handling a cancellation still gets the task stopped and waited for
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if caller.arrived():
            raise
    except Exception:
        if not swallow_errors:
            raise
