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


def shutdown_now(llm: Any, *, collect: bool) -> None:
    """Best-effort ``llm.shutdown()`` (its processes may already be gone); blocking.

    ``collect``: run the garbage collector afterwards. An AsyncLLM sits in reference cycles, and its ``__del__``
    shuts down again, which fails at interpreter exit; a collection after the last reference is gone runs it at a
    harmless time. The collection only frees the engine if the caller holds no reference: a caller that does drops
    it and collects itself. Not on a serving path: a full collection holds the GIL for most of a second, and the
    event loop must keep answering health checks meanwhile.
    """
    try:
        llm.shutdown()
    except Exception:  # a dead engine may fail its own cleanup; nothing is left to save
        log.debug("shutting down a vLLM engine raised", exc_info=True)
    del llm
    if collect:
        gc.collect()


async def shut_down(llm: Any, *, collect: bool = False) -> None:
    """Stop ``llm`` (its calls have finished): the output handler here, then the engine off the event loop."""
    await stop_output_handler(llm)
    await asyncio.to_thread(shutdown_now, llm, collect=collect)
