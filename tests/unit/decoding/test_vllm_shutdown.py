"""Shutting an AsyncLLM down stops its output handler first, so a clean stop logs no error.

The fake mirrors the order of ``AsyncLLM.shutdown`` run off the loop: the engine core goes (the handler, awaiting
its output, is woken with an error), then the handler is cancelled from the other thread. A real engine shows the
same race on about a third of its stops (the closing note of the change has the counts).
"""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from services.decoding.vllm_shutdown import shut_down, stop_output_handler

log = logging.getLogger("fake_vllm")


class EngineDeadError(Exception):
    pass


class FakeAsyncLLM:
    """An output handler awaiting the engine's output; ``shutdown`` kills the engine, then cancels the handler."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.output: asyncio.Future[None] = self.loop.create_future()
        self.output_handler = self.loop.create_task(self._handle())
        self.handler_done_at_shutdown: bool | None = None
        self.shutdown_thread: threading.Thread | None = None

    async def _handle(self) -> None:
        try:
            await self.output
        except Exception:  # as vLLM's handler: anything but a cancellation is logged as a failure
            log.exception("AsyncLLM output_handler failed.")

    def _engine_gone(self) -> None:
        if not self.output.done():
            self.output.set_exception(EngineDeadError("EngineCore encountered an issue"))

    def shutdown(self) -> None:
        self.shutdown_thread = threading.current_thread()
        self.handler_done_at_shutdown = self.output_handler.done()
        self.loop.call_soon_threadsafe(self._engine_gone)
        threading.Event().wait(0.05)  # the engine core's teardown takes seconds; the loop runs on meanwhile
        self.loop.call_soon_threadsafe(self.output_handler.cancel)


async def test_shut_down_cancels_the_handler_first_and_logs_no_error(caplog: pytest.LogCaptureFixture) -> None:
    llm = FakeAsyncLLM()
    await asyncio.sleep(0)  # the handler is awaiting the engine's output
    with caplog.at_level(logging.ERROR):
        await shut_down(llm)
        await asyncio.sleep(0.1)  # anything the engine's death would still wake
    assert llm.handler_done_at_shutdown is True
    assert llm.output_handler.cancelled()
    assert llm.shutdown_thread is not threading.current_thread()  # the blocking shutdown ran off the loop
    assert [r.getMessage() for r in caplog.records if r.name == "fake_vllm"] == []


async def test_the_fake_reproduces_the_error_without_stopping_the_handler(caplog: pytest.LogCaptureFixture) -> None:
    """What shut_down prevents: the plain blocking shutdown off the loop logs the handler's failure."""
    llm = FakeAsyncLLM()
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR):
        await asyncio.to_thread(llm.shutdown)
        await asyncio.sleep(0.1)
    assert [r.getMessage() for r in caplog.records if r.name == "fake_vllm"] == ["AsyncLLM output_handler failed."]


async def test_stop_output_handler_leaves_an_engine_without_a_handler_alone() -> None:
    class NoHandler:
        output_handler = None

    await stop_output_handler(NoHandler())  # never started (no call yet): nothing to cancel, no AttributeError


async def test_cancelling_the_caller_still_propagates() -> None:
    """The wait on the handler does not swallow a cancellation of the task shutting down (``await handler`` under
    ``suppress(CancelledError)`` would: the task would return as if it had finished)."""

    class SlowToEnd:
        def __init__(self) -> None:
            self.output_handler = asyncio.get_running_loop().create_task(self._handle())

        async def _handle(self) -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await asyncio.sleep(0.2)  # cleanup after the cancel
                raise

    llm = SlowToEnd()
    await asyncio.sleep(0)
    stopper = asyncio.create_task(stop_output_handler(llm))
    await asyncio.sleep(0.05)  # the stopper waits for the handler's cleanup
    assert not stopper.done()
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    await asyncio.wait([llm.output_handler])
