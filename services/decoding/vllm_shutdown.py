"""Shutting a vLLM ``AsyncLLM`` down without it logging a clean stop as an error.

``AsyncLLM.shutdown`` stops the engine-core process first and cancels its output-handler task last. Called off the
event loop (it blocks for seconds, so it must be), it leaves the handler awaiting the engine's output meanwhile; the
handler then sees the engine gone, raises ``EngineDeadError`` and logs "AsyncLLM output_handler failed" with a
traceback: on about half the stops of a used engine, at every hot swap and at every service exit. Cancelling the
handler on its own loop first, while nothing is in flight, ends it quietly; the rest of the shutdown runs as before.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

log = logging.getLogger(__name__)


async def stop_output_handler(llm: Any) -> None:
    """Cancel the engine's output-handler task (on this loop, where it runs) and wait until it has ended."""
    handler = getattr(llm, "output_handler", None)
    if isinstance(handler, asyncio.Task) and not handler.done():
        handler.cancel()
        await asyncio.wait([handler])  # not `await handler`: its CancelledError is not this task's cancellation


def shutdown_now(llm: Any) -> None:
    """Best-effort ``llm.shutdown()`` (its processes may already be gone); blocking."""
    try:
        llm.shutdown()
    except Exception:  # a dead engine may fail its own cleanup; nothing is left to save
        log.debug("shutting down a vLLM engine raised", exc_info=True)


async def shut_down(llm: Any) -> None:
    """Stop ``llm`` (its calls have finished): the output handler here, then the engine off the event loop."""
    await stop_output_handler(llm)
    await asyncio.to_thread(shutdown_now, llm)


async def collect_engines() -> None:
    """A full garbage collection, off the event loop, once the caller has dropped its last engine reference.

    An AsyncLLM sits in reference cycles, so dropping it frees nothing until a collection; its ``__del__`` shuts
    down again, which at interpreter exit fails with a traceback ("'NoneType' object is not callable"). Collecting
    right after the stop runs it at a harmless time. A collection only frees what no frame still holds: call this
    after ``del`` of every local that names the engine. Not on a serving path: it holds the GIL for most of a second.
    """
    await asyncio.to_thread(gc.collect)
