"""Counting event-loop turns instead of seconds, for tests of what must happen within a few turns (no wall clock)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def turns(count: int) -> None:
    """Let the event loop run ``count`` times: each turn runs the callbacks and tasks woken by the one before."""
    for _ in range(count):
        await asyncio.sleep(0)


async def within_turns(awaitable: Awaitable[T], count: int = 100) -> asyncio.Future[T]:
    """Start ``awaitable`` and let the loop turn until it is done, at most ``count`` times; its future, done or not
    (a stop that awaits nothing outside this loop ends within a few turns, or is hung)."""
    future = asyncio.ensure_future(awaitable)
    for _ in range(count):
        if future.done():
            break
        await asyncio.sleep(0)
    return future
