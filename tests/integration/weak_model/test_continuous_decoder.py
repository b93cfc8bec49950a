"""The hf engine's continuous Continue batch on the bundled weak model: rows capped, the queue bounded, a cancelled
call leaves the batch, a failed step fails only the calls in it, and stopping fails every call instead of hanging."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from services.common.errors import NotReady, Overloaded
from services.decoding.boundaries import StopRule
from services.decoding.hf_batch import DecodingBatch, Generated
from services.decoding.requests import SegmentRequest
from services.decoding.tokens import TokenTable
from services.weak_model.engines.hf_continuous import ContinuousDecoder
from tests.support.loop_turns import turns, within_turns

WEAK = Path(__file__).resolve().parents[3] / "models" / "weak"
PROMPT = "Ann has 4 bags of 7 pens. She gets 3 more. How many pens now?\n"


class Model:
    def __init__(self) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(WEAK)
        self.model = AutoModelForCausalLM.from_pretrained(WEAK).eval()
        self.table = TokenTable.of_model(self.tokenizer, self.model)
        self.steps = 0
        self.rows_per_step: list[int] = []
        self.dropped_at: list[int] = []
        """The step numbers whose ``drop`` list was not empty."""
        self.fail_next = False

    def new_batch(self) -> DecodingBatch:
        return DecodingBatch(
            self.model, pieces=self.table.pieces, eos_ids=self.table.eos_ids,
            pad_id=self.table.pad_id(self.tokenizer), context_window=self.table.context_window,
        )  # fmt: skip

    async def step(
        self, batch: DecodingBatch, join: list, leave: list[Hashable], drop: list[Hashable]
    ) -> list[tuple[Hashable, Generated]]:
        self.steps += 1
        if drop:
            self.dropped_at.append(self.steps)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the forward pass broke")
        ended = await asyncio.to_thread(batch.step, join=join, leave=leave, drop=drop)
        self.rows_per_step.append(len(batch))
        return ended

    def request(self, tokens: int, seed: int = 0) -> SegmentRequest:
        return SegmentRequest(tuple(self.tokenizer.encode(PROMPT)), StopRule(tokens), 2.0, seed=seed)


@pytest.fixture(scope="module")
def shared() -> Model:
    return Model()


@pytest.fixture
async def decoder(shared: Model):
    shared.fail_next, shared.rows_per_step, shared.dropped_at = False, [], []
    decoder = ContinuousDecoder("test.continue", shared.new_batch, shared.step, max_rows=2, max_queue_size=3)
    await decoder.start()
    yield decoder
    await decoder.stop()


async def test_rows_are_capped_and_the_queue_is_bounded(decoder: ContinuousDecoder, shared: Model) -> None:
    calls = [asyncio.ensure_future(decoder.submit_many([shared.request(30, seed)])) for seed in range(3)]
    await asyncio.sleep(0)  # the three are queued; the decoder has not taken any yet
    with pytest.raises(Overloaded, match="max_queue_size 3"):
        await decoder.submit_many([shared.request(3)])
    done = await asyncio.gather(*calls)
    assert all(g.token_ids for [g] in done)
    assert max(shared.rows_per_step) <= 2  # never more than max_rows decoding (paused rows included)


async def test_a_cancelled_call_leaves_the_batch(decoder: ContinuousDecoder, shared: Model) -> None:
    seeds = (11, 19)  # at T 2 each runs 40-50 tokens before EOS
    kept = asyncio.ensure_future(decoder.submit_many([shared.request(150, seeds[0])]))
    cancelled = asyncio.ensure_future(decoder.submit_many([shared.request(150, seeds[1])]))
    while decoder.decoding < 2:
        await asyncio.sleep(0.002)
    cancelled.cancel()
    cancelled_at = shared.steps
    while decoder.decoding > 1:
        await asyncio.sleep(0.002)
    # Dropped at the step after the cancellation reaches the decoder, not decoded to its end (read from the steps
    # themselves: how soon this loop notices depends on the machine's load).
    assert shared.dropped_at and shared.dropped_at[0] <= cancelled_at + 2
    assert not kept.done()
    [generated] = await kept
    assert len(generated.token_ids) > 20
    assert shared.rows_per_step[-1] <= 1  # the cancelled row did not ride along to the end


async def test_a_call_cancelled_while_waiting_frees_its_queue_slot_at_once(
    decoder: ContinuousDecoder, shared: Model
) -> None:
    decoding = [asyncio.ensure_future(decoder.submit_many([shared.request(150, seed)])) for seed in (11, 19)]
    while decoder.decoding < 2:  # max_rows 2: from now on, requests wait
        await asyncio.sleep(0.002)
    waiting = asyncio.ensure_future(decoder.submit_many([shared.request(150, seed) for seed in (1, 2, 3)]))
    await asyncio.sleep(0)
    assert decoder.queue_depth == 3  # max_queue_size 3: full
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert decoder.queue_depth == 0
    [generated] = await decoder.submit_many([shared.request(3)])  # admitted, not refused as Overloaded
    assert 1 <= len(generated.token_ids) <= 3
    for call in decoding:
        call.cancel()


async def test_a_failed_step_fails_its_calls_and_the_next_ones_are_served(
    decoder: ContinuousDecoder, shared: Model
) -> None:
    shared.fail_next = True
    with pytest.raises(RuntimeError, match="the forward pass broke"):
        await decoder.submit_many([shared.request(5)])
    [after] = await decoder.submit_many([shared.request(5)])
    assert after.token_ids


async def test_stopping_fails_every_call(shared: Model) -> None:
    decoder = ContinuousDecoder("test.stop", shared.new_batch, shared.step, max_rows=1, max_queue_size=4)
    with pytest.raises(NotReady, match="not running"):
        await decoder.submit_many([shared.request(3)])
    await decoder.start()
    calls = [asyncio.ensure_future(decoder.submit_many([shared.request(150, seed)])) for seed in (11, 19)]
    while not decoder.decoding:
        await asyncio.sleep(0.002)
    await decoder.stop()
    for call in calls:
        with pytest.raises(NotReady, match="decoder stopped"):
            await call


@pytest.mark.parametrize("ticks", range(8))
async def test_stop_ends_when_a_call_arrives_in_the_same_instant(shared: Model, ticks: int) -> None:
    """The idle decoder gathers a burst; stop() lands just as a second call wakes it. Python 3.11's
    ``asyncio.wait_for`` dropped that cancellation, and the decoder ran on with stop() waiting for it."""
    decoder = ContinuousDecoder(
        "test.stop-race", shared.new_batch, shared.step, max_rows=2, max_queue_size=4, max_delay_ms=60_000
    )
    await decoder.start()
    first = asyncio.ensure_future(decoder.submit_many([shared.request(3)]))
    await turns(3)  # the decoder waits up to a minute for more calls to start with this one
    second = asyncio.ensure_future(decoder.submit_many([shared.request(3, seed=1)]))
    await turns(ticks)
    stop = await within_turns(decoder.stop())
    assert stop.done(), "stop() is still waiting for the decoder's worker"
    await stop
    for call in (first, second):
        with pytest.raises(NotReady, match="decoder stopped"):
            await call
