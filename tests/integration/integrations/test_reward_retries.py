"""A reward call rides out a verifier restart (no lost reward, no 0 for a failure) and, past its deadline, raises an
error that names the service, the status and the attempts."""

from __future__ import annotations

import asyncio

import pytest

from services.common.calls import ServiceCallFailed
from services.common.ports import free_port
from services.learner.integrations.rewards import RewardClient
from services.learner.integrations.settings import IntegrationSettings
from services.tasks.styles import render
from services.tasks.toy import generate
from services.verifier.app import VerifierApp, start_verifier
from services.verifier.settings import VerifierSettings
from tests.support.running import QUICK

PROBLEMS = generate("test", 4, seed=2)
PAIRS = [(p.question, render(p, "plain")) for p in PROBLEMS]


async def verifier_on(port: int) -> VerifierApp:
    return await start_verifier(VerifierSettings(**(QUICK | {"port": port}), http_enabled=False, torch_threads=1))


def reward_client(port: int, deadline_s: float) -> RewardClient:
    settings = IntegrationSettings(
        verifier_target=f"127.0.0.1:{port}", reward="verifier", timeout_s=5, reward_deadline_s=deadline_s
    )
    return RewardClient(settings)


@pytest.mark.slow
async def test_a_reward_asked_while_the_verifier_restarts_is_the_verifiers_score() -> None:
    port = free_port()
    verifier = await verifier_on(port)
    client = reward_client(port, deadline_s=120)
    try:
        expected = [r.value for r in await asyncio.to_thread(client.rewards, *zip(*PAIRS, strict=True))]
        await verifier.stop()  # the replica goes away ...
        asked = asyncio.ensure_future(asyncio.to_thread(client.rewards, *zip(*PAIRS, strict=True)))
        await asyncio.sleep(2.0)
        assert not asked.done()  # ... the reward waits for it, rather than failing or returning 0
        verifier = await verifier_on(port)  # ... and it comes back on the same address
        got = [r.value for r in await asyncio.wait_for(asked, timeout=120)]
    finally:
        client.close()
        await verifier.stop()
    assert got == pytest.approx(expected, abs=1e-6)
    assert all(value != 0.0 for value in got)


async def test_past_its_deadline_a_reward_raises_naming_the_service_the_status_and_the_attempts() -> None:
    client = reward_client(free_port(), deadline_s=4.0)  # nothing listens there
    try:
        with pytest.raises(ServiceCallFailed) as raised:
            await asyncio.to_thread(client.rewards, *zip(*PAIRS, strict=True))
    finally:
        client.close()
    message = str(raised.value)
    assert message.startswith("verifier Score failed: UNAVAILABLE after ")
    assert raised.value.attempts >= 2 and f"after {raised.value.attempts} attempts" in message
