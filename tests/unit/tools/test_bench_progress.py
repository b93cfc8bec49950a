"""A bench's progress line: stages marked anywhere below it (tasks, threads) count; nothing happens without one."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest
from rich.console import Console

from services.tools.bench_progress import BenchProgress, stage


def quiet_console() -> Console:
    return Console(file=io.StringIO(), force_terminal=False)


def test_stages_count_from_tasks_and_threads_in_order() -> None:
    async def bench() -> None:
        with stage("raw"):
            await asyncio.to_thread(lambda: None)

        async def level(name: str) -> None:
            with stage(name):
                await asyncio.sleep(0)

        def in_a_thread() -> None:
            with stage("in a thread"):
                pass

        await asyncio.create_task(level("service, 1 x 1"))
        await asyncio.to_thread(in_a_thread)

    with BenchProgress("bench", 3, quiet_console()) as progress:
        asyncio.run(bench())
    assert progress.done == ["raw", "service, 1 x 1", "in a thread"]


def test_a_stage_that_raises_is_not_counted_and_a_short_count_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), BenchProgress("bench", 2, quiet_console()) as progress:
        with stage("ok"):
            pass
        with pytest.raises(RuntimeError), stage("fails"):
            raise RuntimeError("the service did not start")
    assert progress.done == ["ok"]
    assert [r.getMessage() for r in caplog.records] == ["bench: 1 stages ran, 2 were counted"]


def test_a_matching_count_reports_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), BenchProgress("bench", 1, quiet_console()), stage("only"):
        pass
    assert caplog.records == []


def test_stage_without_a_bench_does_nothing() -> None:
    with stage("alone"):
        pass  # no progress running: no error, nothing recorded anywhere
    with BenchProgress("later", 0, quiet_console()) as progress:
        pass
    assert progress.done == []
