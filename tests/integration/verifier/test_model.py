"""The VerifierModel object on its own: batching independence, and closing lets calls in flight finish
(what a hot swap relies on: the old model drains while the new one answers)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.common.errors import NotReady
from services.tasks.prompts import PromptFormat
from services.tasks.steps import Step, step_ends
from services.tasks.toy_task import ToyTask
from services.verifier.model import StepsItem, load_verifier
from tests.integration.verifier.conftest import VERIFIER_MODEL, model_held

PROBLEM = "Ann has 4 bags of 7 pens. She gets 3 more. How many pens now?"
SOLUTION = "4*7=28.\n28+3=31.\n#### 31"


@pytest.fixture
def loaded():  # per test: the batcher's asyncio objects belong to one event loop
    return load_verifier(VERIFIER_MODEL, max_batch_size=8, max_delay_ms=300, max_queue_size=64)


def test_a_score_does_not_depend_on_its_batch_or_padding(loaded) -> None:
    alone = loaded.forward([(PROBLEM, SOLUTION)])[0]
    crowded = loaded.forward([(PROBLEM, "1" * 100), (PROBLEM, SOLUTION), ("Bo has 2 cups.", "2")])
    assert crowded[1] == pytest.approx(alone, abs=1e-5)
    assert loaded.token_count(PROBLEM, SOLUTION) == len(PROBLEM) + 1 + len(SOLUTION) + 1
    assert loaded.context_window == 192
    assert loaded.weights.version == 0 and len(loaded.weights.sha256) == 64


async def test_score_steps_submits_every_prefix_and_regroups_them(loaded) -> None:
    await loaded.start()
    try:
        items = [StepsItem(PROBLEM, SOLUTION), StepsItem(PROBLEM, SOLUTION, (5, 24)), StepsItem("Bo has 2 cups.", "2")]
        scored = await loaded.score_steps(items)
        assert [[s.end for s in steps] for steps in scored] == [step_ends(SOLUTION), [5, 24], [1]]
        prefixes = [(PROBLEM, SOLUTION[:8]), (PROBLEM, SOLUTION[:17]), (PROBLEM, SOLUTION), (PROBLEM, SOLUTION[:5])]
        want = loaded.forward(prefixes)
        got = [s.score for s in scored[0]] + [scored[1][0].score]
        assert got == pytest.approx(want, abs=1e-5)
    finally:
        await loaded.close()


class SentenceSteps(ToyTask):
    """A task that cuts solutions after every full stop: ScoreSteps must follow it, not the line splitter."""

    def split_steps(self, solution: str) -> list[Step]:
        ends = [i + 1 for i, c in enumerate(solution) if c == "."] + [len(solution)]
        starts = [0, *ends[:-1]]
        return [Step(a, b, solution[a:b]) for a, b in zip(starts, ends, strict=True)]


async def test_score_steps_without_ends_follows_the_tasks_splitter() -> None:
    loaded = load_verifier(
        VERIFIER_MODEL, max_delay_ms=1, prompts=lambda tokenizer: PromptFormat(SentenceSteps(), tokenizer)
    )
    await loaded.start()
    try:
        (scored,) = await loaded.score_steps([StepsItem(PROBLEM, SOLUTION)])
        assert [s.end for s in scored] == [7, 16, len(SOLUTION)] != step_ends(SOLUTION)
        want = loaded.forward([(PROBLEM, SOLUTION[:7]), (PROBLEM, SOLUTION[:16]), (PROBLEM, SOLUTION)])
        assert [s.score for s in scored] == pytest.approx(want, abs=1e-5)
    finally:
        await loaded.close()


async def test_close_lets_calls_in_flight_finish_then_refuses_new_ones(loaded) -> None:
    await loaded.start()
    with model_held(loaded) as hold:
        running = asyncio.ensure_future(loaded.score([(PROBLEM, SOLUTION)]))  # its batch holds the model
        await hold.busy.wait()
        queued = asyncio.ensure_future(loaded.score([(PROBLEM, SOLUTION)] * 3))  # gathers while the model is busy
        while not loaded.queue_depth:
            await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(loaded.close())
        await asyncio.sleep(0.05)
        assert not closing.done()  # waiting for both calls
        hold.go.set()
        await closing
    assert running.done() and len(running.result()) == 1
    assert queued.done() and len(queued.result()) == 3
    with pytest.raises(NotReady) as info:
        await loaded.score([(PROBLEM, SOLUTION)])
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
