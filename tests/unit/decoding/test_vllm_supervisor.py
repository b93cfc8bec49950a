"""The supervisor's policy on engines that die on command: health off at once, restarts with doubling backoff, give
up after max_restarts. (A real engine core killed under load: tests/integration/weak_model/test_vllm_workload.py.)"""

from __future__ import annotations

import asyncio
import gc
import weakref
from types import SimpleNamespace
from typing import Any

import pytest

from services.decoding.vllm_supervisor import ENGINE_FAILURES, EngineSupervisor, is_dead


class FakeLLM:
    """What the supervisor reads and calls of an AsyncLLM."""

    def __init__(self) -> None:
        self.errored = False
        self.shut_down = False
        self.engine_core: Any = None

    def shutdown(self) -> None:
        self.shut_down = True


class Starts:
    """start_llm that fails its first ``failing`` calls after the first one."""

    def __init__(self, failing: int = 0) -> None:
        self.failing = failing
        self.made: list[FakeLLM] = []
        self.calls = 0

    def __call__(self) -> FakeLLM:
        self.calls += 1
        if self.calls > 1 and self.failing > 0:
            self.failing -= 1
            raise RuntimeError("no memory for the KV cache")
        self.made.append(FakeLLM())
        return self.made[-1]


class HealthLog:
    """The on_health callback: every state it was told, in order."""

    def __init__(self) -> None:
        self.states: list[bool] = []

    async def __call__(self, serving: bool) -> None:
        self.states.append(serving)


def supervised(starts: Starts, **knobs: float) -> tuple[EngineSupervisor, HealthLog]:
    supervisor = EngineSupervisor("test", starts, **knobs)  # type: ignore[arg-type]
    health = HealthLog()
    supervisor.connect(health, lambda reason: pytest.fail(reason))
    return supervisor, health


async def wait_for(condition, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


async def test_a_dead_engine_turns_health_off_then_a_restart_turns_it_on() -> None:
    starts = Starts()
    supervisor, health = supervised(starts, max_restarts=2, backoff_s=0.5, poll_s=0.01)
    await supervisor.start()
    first = supervisor.llm
    before = ENGINE_FAILURES.labels("test")._value.get()
    first.errored = True
    await wait_for(lambda: health.states == [False])
    assert supervisor.llm is None  # callers answer UNAVAILABLE meanwhile
    await wait_for(lambda: health.states == [False, True])
    assert supervisor.llm is starts.made[1] and first.shut_down
    assert ENGINE_FAILURES.labels("test")._value.get() == before + 1
    await supervisor.close()
    assert starts.made[1].shut_down


async def test_a_caller_that_saw_the_death_starts_recovery_without_waiting_for_the_poll() -> None:
    starts = Starts()
    supervisor, health = supervised(starts, max_restarts=1, backoff_s=0.0, poll_s=3600)
    await supervisor.start()
    supervisor.report_dead(supervisor.llm, "EngineDeadError")
    supervisor.report_dead(supervisor.llm, "EngineDeadError")  # a second caller: still one recovery
    await wait_for(lambda: health.states == [False, True])
    assert starts.calls == 2
    await supervisor.close()


async def test_restarts_back_off_and_give_up_after_max_restarts() -> None:
    starts = Starts(failing=10)
    slept: list[float] = []

    async def recording_sleep(delay: float) -> None:
        slept.append(delay)

    supervisor = EngineSupervisor("test", starts, max_restarts=3, backoff_s=0.5, poll_s=0.01, sleep=recording_sleep)
    reasons: list[str] = []

    async def on_health(serving: bool) -> None:
        pass

    supervisor.connect(on_health, reasons.append)
    await supervisor.start()
    supervisor.llm.errored = True
    await wait_for(lambda: reasons != [])
    assert starts.calls == 1 + 3
    assert slept == [0.5, 1.0, 2.0]
    assert "3 restarts failed" in reasons[0] and supervisor.gave_up == reasons[0]
    assert supervisor.llm is None
    await supervisor.close()


def test_an_exited_engine_core_process_counts_as_dead_before_vllm_flags_it() -> None:
    llm = FakeLLM()
    alive = SimpleNamespace(is_alive=lambda: True)
    exited = SimpleNamespace(is_alive=lambda: False)
    llm.engine_core = SimpleNamespace(resources=SimpleNamespace(engine_manager=SimpleNamespace(processes=[alive])))
    assert not is_dead(llm)
    llm.engine_core.resources.engine_manager.processes = [alive, exited]
    assert is_dead(llm)
    assert is_dead(FakeLLM()) is False  # no processes exposed: vLLM's flag alone


async def test_close_frees_the_engine_now_not_at_interpreter_exit() -> None:
    """An AsyncLLM sits in reference cycles, and its ``__del__`` fails at interpreter exit: close collects once no
    frame holds the engine (automatic collections are off here, so only that collection can free it)."""
    engines: list[weakref.ref[FakeLLM]] = []

    def start() -> FakeLLM:
        llm = FakeLLM()
        llm.engine_core = SimpleNamespace(client=llm)  # a reference cycle through the engine-core client
        engines.append(weakref.ref(llm))
        return llm

    supervisor = EngineSupervisor("test", start)
    gc.disable()
    try:
        await supervisor.start()
        assert engines[0]() is not None
        await supervisor.close()
        assert engines[0]() is None
    finally:
        gc.enable()
