"""Closed-loop load for the benches: concurrent clients, each making its next call when the last one returns.

Every client first makes ``warmup_calls`` calls that are not counted (connections open, the engine's batches in
their steady shape); then the clients share call indices from 0 until ``requests`` calls have started or
``duration_s`` has passed. Calls running at the end finish and count, and the time runs until the last one ends.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def closed_loop(
    call: Callable[[int], Awaitable[T]],
    *,
    clients: int,
    warmup_calls: int,
    requests: int | None,
    duration_s: float,
) -> tuple[list[T], float]:
    """(the counted calls' results, seconds from the end of the warm-up to the last counted call's end)."""

    async def warm(first: int) -> None:
        for index in range(first, first + warmup_calls):
            await call(index)

    await asyncio.gather(*(warm(client * warmup_calls) for client in range(clients)))
    limit = math.inf if requests is None else requests
    results: list[T] = []
    sent = 0
    started = time.perf_counter()
    end = started + duration_s

    async def client() -> None:
        nonlocal sent
        while sent < limit and time.perf_counter() < end:
            index, sent = sent, sent + 1
            results.append(await call(index))

    await asyncio.gather(*(client() for _ in range(clients)))
    return results, time.perf_counter() - started
