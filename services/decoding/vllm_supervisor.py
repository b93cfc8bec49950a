"""Keeps one vLLM ``AsyncLLM`` alive for a service: notices its death at once, says so, restarts it, or gives up.

vLLM's engine core runs in a child process. When it dies (an error inside a step, an OOM kill, ``kill -9``),
``AsyncLLM`` marks itself errored and every later call raises ``EngineDeadError``; nothing else changes, so a
service without a supervisor keeps answering health SERVING while it fails every call. Here:

- a poll every ``poll_s`` of ``llm.errored`` and of the engine-core processes' liveness (:func:`is_dead`), and any
  call that sees ``EngineDeadError`` (:meth:`EngineSupervisor.report_dead`), start the failure path;
- the failure path takes the engine out of service (``llm`` is None: callers answer UNAVAILABLE, which clients
  retry elsewhere), flips health NOT_SERVING, counts the failure, shuts the dead engine's leftovers down, and starts
  a new engine after ``backoff_s``, doubling per attempt, at most ``max_restarts`` times in a row;
- when every attempt fails it calls ``give_up``: the service stops and exits non-zero, so the orchestrator restarts
  the pod. A restart that works resets the count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter

from services.common.tasks import cancel_and_wait
from services.decoding.vllm_shutdown import collect_engines, shut_down

log = logging.getLogger(__name__)

ENGINE_FAILURES = Counter(
    "legibility_engine_failures_total",
    "vLLM engine deaths seen (engine core exited or errored); health was NOT_SERVING until a restart.",
    ["engine"],
)
ENGINE_RESTARTS = Counter(
    "legibility_engine_restarts_total", "vLLM engine restarts, by outcome (ok, failed).", ["engine", "outcome"]
)

HealthCallback = Callable[[bool], Awaitable[None]]
GiveUpCallback = Callable[[str], None]


def engine_processes(llm: Any) -> list[Any]:
    """The engine-core processes of an AsyncLLM (``multiprocessing.Process``), where vLLM exposes them; else []."""
    resources = getattr(getattr(llm, "engine_core", None), "resources", None)
    manager = getattr(resources, "engine_manager", None)
    return list(getattr(manager, "processes", None) or [])


def is_dead(llm: Any) -> bool:
    """vLLM's own flag, or an engine-core process that has exited: vLLM's monitor thread sets the flag only after
    it has shut the rest down (most of a second), the process check sees the exit at the next poll."""
    return bool(llm.errored) or any(not process.is_alive() for process in engine_processes(llm))


class EngineSupervisor:
    """Owns the running ``AsyncLLM`` (made by ``start_llm``, a blocking call) and its restarts."""

    def __init__(
        self,
        name: str,
        start_llm: Callable[[], Any],
        *,
        max_restarts: int = 3,
        backoff_s: float = 2.0,
        poll_s: float = 0.1,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self._start_llm = start_llm
        self.max_restarts = max_restarts
        self.backoff_s = backoff_s
        self.poll_s = poll_s
        self._backoff_sleep = sleep
        self.llm: Any = None
        """The serving engine; None while it is down (starting, restarting, closed)."""
        self.failures = 0
        self.last_failure: tuple[float, str] | None = None
        """(``time.monotonic()`` when the latest death was noticed, how it was noticed)."""
        self.gave_up: str | None = None
        """Why the supervisor stopped restarting; the service exits non-zero with it."""
        self._on_health: HealthCallback | None = None
        self._give_up: GiveUpCallback | None = None
        self._watch: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None
        self._closed = False

    def connect(self, on_health: HealthCallback, give_up: GiveUpCallback) -> None:
        """Where health changes and a final failure go (the service's server)."""
        self._on_health, self._give_up = on_health, give_up

    def load(self) -> None:
        """Start the first engine (blocking, tens of seconds on CPU)."""
        if self.llm is None:
            self.llm = self._start_llm()

    async def start(self) -> None:
        """Start the engine if needed, then watch it."""
        if self.llm is None:
            await asyncio.to_thread(self.load)
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_loop(), name=f"{self.name}-watch")

    async def close(self) -> None:
        """Stop watching and shut the engine down (no restart after this)."""
        self._closed = True
        for task in (self._watch, self._recovery):
            if task is not None:
                await cancel_and_wait(task, swallow_errors=True)
        llm, self.llm = self.llm, None
        if llm is not None:
            await shut_down(llm)
            del llm
            await collect_engines()

    def report_dead(self, llm: Any, reason: str) -> None:
        """A caller saw ``llm`` die (EngineDeadError): start the failure path now, not at the next poll."""
        if llm is self.llm and self._recovery is None and not self._closed:
            self._recovery = asyncio.get_running_loop().create_task(self._recover(reason), name=f"{self.name}-restart")

    async def _watch_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.poll_s)
            llm = self.llm
            if llm is not None and is_dead(llm):
                self.report_dead(llm, "the engine core exited or errored")
            if self._recovery is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(self._recovery)
                self._recovery = None

    async def _set_health(self, serving: bool) -> None:
        if self._on_health is not None:
            await self._on_health(serving)

    async def _recover(self, reason: str) -> None:
        dead, self.llm = self.llm, None  # from here callers get NotReady (UNAVAILABLE)
        self.last_failure = (time.monotonic(), reason)
        await self._set_health(False)
        self.failures += 1
        ENGINE_FAILURES.labels(self.name).inc()
        log.error("%s: vLLM engine died (%s); health NOT_SERVING, restarting", self.name, reason)
        if dead is not None:
            await shut_down(dead)
        for attempt in range(1, self.max_restarts + 1):
            delay = self.backoff_s * 2 ** (attempt - 1)
            log.info("%s: restart %d of %d in %.1f s", self.name, attempt, self.max_restarts, delay)
            await self._backoff_sleep(delay)
            if self._closed:
                return
            try:
                llm = await asyncio.to_thread(self._start_llm)
            except Exception as error:
                ENGINE_RESTARTS.labels(self.name, "failed").inc()
                log.error("%s: restart %d failed: %s", self.name, attempt, error)
                continue
            if self._closed:
                await shut_down(llm)
                del llm
                await collect_engines()
                return
            self.llm = llm
            ENGINE_RESTARTS.labels(self.name, "ok").inc()
            log.info("%s: vLLM engine restarted; health SERVING", self.name)
            await self._set_health(True)
            return
        tried = f"{self.max_restarts} restarts failed" if self.max_restarts else "restarts are off"
        self.gave_up = f"the vLLM engine died ({reason}) and {tried}"
        log.error("%s: %s; stopping the service", self.name, self.gave_up)
        if self._give_up is not None:
            self._give_up(self.gave_up)
