"""TandemAgent reads the vocabulary once per rollout worker, however many of OpenRLHF's concurrent ``execute`` calls
ask first, and retries after a failure."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer

from services.common.bundled_models import BUNDLED_WEAK
from services.decoding.tokens import tokenizer_sha256
from services.learner.integrations.settings import IntegrationSettings
from services.learner.integrations.tandem_agent import TandemAgent


class WeakService:
    """The weak-model client's model_info: counted, held until released, failing while ``failures`` > 0."""

    def __init__(self, sha256: str, failures: int = 0) -> None:
        self.sha256 = sha256
        self.failures = failures
        self.calls = 0
        self.release = asyncio.Event()

    async def model_info(self) -> SimpleNamespace:
        self.calls += 1
        await self.release.wait()
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("weak-model service unreachable")
        return SimpleNamespace(tokenizer_sha256=self.sha256, uri="weak")


def agent_with(weak: WeakService) -> TandemAgent:
    agent = TandemAgent(IntegrationSettings(seed=0))
    agent._clients = SimpleNamespace(weak=weak)  # type: ignore[assignment]
    return agent


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(BUNDLED_WEAK)


async def test_concurrent_rollouts_read_the_vocabulary_once(tokenizer) -> None:
    weak = WeakService(tokenizer_sha256(tokenizer))
    agent = agent_with(weak)
    calls = [asyncio.create_task(agent._prepare(tokenizer)) for _ in range(16)]
    await asyncio.sleep(0.01)
    weak.release.set()
    prepared = await asyncio.gather(*calls)
    assert weak.calls == 1
    assert all(vocab is prepared[0][0] for vocab, _ in prepared)
    await agent._prepare(tokenizer)  # later batches reuse it
    assert weak.calls == 1


async def test_a_failure_reaches_every_waiting_rollout_and_the_next_call_retries(tokenizer) -> None:
    weak = WeakService(tokenizer_sha256(tokenizer), failures=1)
    agent = agent_with(weak)
    calls = [asyncio.create_task(agent._prepare(tokenizer)) for _ in range(4)]
    await asyncio.sleep(0.01)
    weak.release.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError] * 4 and weak.calls == 1
    vocab, _ = await agent._prepare(tokenizer)
    assert weak.calls == 2 and vocab is not None


async def test_one_cancelled_rollout_does_not_cancel_the_others_preparation(tokenizer) -> None:
    weak = WeakService(tokenizer_sha256(tokenizer))
    agent = agent_with(weak)
    first = asyncio.create_task(agent._prepare(tokenizer))
    second = asyncio.create_task(agent._prepare(tokenizer))
    await asyncio.sleep(0.01)
    first.cancel()
    weak.release.set()
    vocab, _ = await second
    assert first.cancelled() and vocab is not None and weak.calls == 1


async def test_a_different_vocabulary_is_refused(tokenizer) -> None:
    weak = WeakService("0" * 64)
    weak.release.set()
    with pytest.raises(Exception, match="different tokenizers"):
        await agent_with(weak)._prepare(tokenizer)
