"""How the benches run a level: uncounted warm-up calls per client, then steady load for the duration or up
to a request cap, every call counted once (a fake call, no engines)."""

from __future__ import annotations

import asyncio

from services.tools.bench_weak_model import WARMUP_CALLS, _level


class FakeCall:
    """Answers each prompt with its length in tokens after a short wait; counts every call."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, prompt: str) -> int:
        self.calls += 1
        await asyncio.sleep(0.002)
        return len(prompt)


async def test_a_level_runs_its_duration_after_uncounted_warm_up_calls() -> None:
    call = FakeCall()
    row = await _level("service, 4 clients", "vllm", call, ["ab", "abc"], 4, None, 0.1)
    assert row.seconds >= 0.1  # no loop stops before the deadline while there is no cap
    assert row.requests > 4 and call.calls == row.requests + 4 * WARMUP_CALLS
    assert row.tokens == sum(len(p) for p in _fed(["ab", "abc"], call.calls)[4 * WARMUP_CALLS :])
    assert (row.engine, row.clients) == ("vllm", 4)


async def test_a_request_cap_counts_exactly_that_many_calls() -> None:
    call = FakeCall()
    row = await _level("raw AsyncLLM, 3 clients", "raw", call, ["abcd"], 3, 7, 30.0)
    assert row.requests == 7 and row.tokens == 28
    assert call.calls == 7 + 3 * WARMUP_CALLS  # the cap ended the level, not the 30-s duration


def _fed(prompts: list[str], count: int) -> list[str]:
    """The prompts in the order the level hands them out: cycled, to whichever client is free."""
    return [prompts[i % len(prompts)] for i in range(count)]


async def test_the_verifier_bench_counts_classify_calls_ok_and_failed_after_its_warm_up() -> None:
    from services.tools.bench_verifier import WARMUP_CALLS as VERIFIER_WARMUP
    from services.tools.bench_verifier import BenchConfig, _drive

    sent: list[list[list[int]]] = []

    async def classify(inputs: list[list[int]]) -> list[float]:
        sent.append(inputs)
        if inputs[0] == [3]:  # one text in four fails
            raise RuntimeError("HTTP 500")
        return [0.0] * len(inputs)

    texts = [[0], [1], [2], [3]]
    ok, failed, _ = await _drive(classify, texts, 2, 1, BenchConfig(requests=8, duration_s=30.0))
    assert (ok, failed) == (6, 2)  # calls 0..7 of one text each: texts 3 and 7 % 4 fail
    assert len(sent) == 8 + 2 * VERIFIER_WARMUP  # warm-up calls reach the server, uncounted
