"""tests/support/teardown.py: a hung teardown step fails naming the step and where each task waits."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.teardown import bounded


async def _stuck_in_close(never: asyncio.Event) -> None:
    await never.wait()


async def _stop_service(never: asyncio.Event) -> None:
    await _stuck_in_close(never)


async def test_a_hung_step_fails_naming_it_and_the_await_chain() -> None:
    never = asyncio.Event()
    with pytest.raises(AssertionError) as failure:
        await bounded("stop the verifier", _stop_service(never), timeout_s=0.05)
    message = str(failure.value)
    assert message.startswith("teardown step 'stop the verifier' did not finish in 0.05 s")
    frames = [line for line in message.splitlines() if line.startswith("    ") and " in " in line]
    chain = [frame.rsplit(" in ", 1)[-1] for frame in frames]
    assert chain[:3] == ["_stop_service", "_stuck_in_close", "wait"]


async def test_a_step_that_ends_passes_its_error_through() -> None:
    await bounded("quick", asyncio.sleep(0))

    async def broken() -> None:
        raise RuntimeError("close failed")

    with pytest.raises(RuntimeError, match="close failed"):
        await bounded("broken", broken())
