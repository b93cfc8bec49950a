"""Run a command that starts processes (the demo, the benches) so that none outlives it, however it ends.

- **SIGTERM** (``kill``, a CI timeout, Kubernetes) cancels the command's main task, as asyncio.run already does for
  the first Ctrl-C: the command unwinds at an ``await`` and every ``finally`` that stops its services and its Redis
  runs. A Python handler raising KeyboardInterrupt (what the demo did before) lands at whatever bytecode runs when the
  signal comes, a gRPC completion callback or a library's cleanup included, where it can be swallowed or cut that
  cleanup short (a CI run saw the demo exit on SIGTERM with two of its services still running).
  Later SIGTERMs are ignored, so they cannot cut the stop short either; SIGKILL is the way to hurry it.
- **SIGKILL** (or a crash) runs no ``finally``: the command's reaper (:mod:`services.common.reaper`) then stops the
  processes it started.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from services.common.reaper import guard_descendants

T = TypeVar("T")

EXIT_CODE = 128 + signal.SIGTERM
"""What a shell reports for a process ended by SIGTERM; a command stopped by it exits with this."""


def run_command(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` with a reaper beside this process and SIGTERM cancelling ``main``; exits with
    :data:`EXIT_CODE` (SystemExit, after ``main``'s cleanup) when SIGTERM stopped it."""
    terminated: list[bool] = []  # set by the signal handler; read after the loop has closed

    async def until_sigterm() -> T:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        assert task is not None

        def on_sigterm() -> None:
            if not terminated:
                terminated.append(True)
                task.cancel()

        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        try:
            return await main
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    guard_descendants()
    try:
        return asyncio.run(until_sigterm())
    except asyncio.CancelledError:
        if terminated:
            print("stopped by SIGTERM; the processes it started are stopped", file=sys.stderr)
            raise SystemExit(EXIT_CODE) from None
        raise
