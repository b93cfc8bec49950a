"""OpenRLHF's own HTTP reward client (``--reward.remote_url http://.../get_reward``) against the verifier's route."""

from __future__ import annotations

import pytest
from openrlhf.utils.agent import SingleTurnAgentExecutor

from services.tasks import toy
from services.verifier.app import start_verifier
from services.verifier.settings import VerifierSettings
from tests.integration.integrations.conftest import MODELS, PROBLEMS, Services
from tests.support.running import QUICK

pytestmark = [pytest.mark.asyncio(loop_scope="module")]  # the module's services run on the module's loop


async def test_openrlhf_http_client_gets_verifier_scores(services: Services) -> None:
    app = await start_verifier(
        VerifierSettings(**QUICK, model_path=MODELS / "verifier", http_port=0, max_delay_ms=2.0, torch_threads=1)
    )
    try:
        executor = SingleTurnAgentExecutor(remote_rm_url=f"http://127.0.0.1:{app.http_port}/get_reward")
        problems = PROBLEMS[:2]
        prompts = [toy.format_prompt(p.question) for p in problems]
        solutions = [f"{p.answer} in all.\n#### {p.answer}" for p in problems]
        queries = [p + s + "<|endoftext|>" for p, s in zip(prompts, solutions, strict=True)]
        (reply,) = await executor._fetch_rewards_via_http(queries, prompts, [str(p.answer) for p in problems])
    finally:
        await app.stop()
    expected = await services.scores([(p.question, s) for p, s in zip(problems, solutions, strict=True)])
    assert reply["rewards"] == pytest.approx(expected, abs=1e-5)
    assert reply["extra_logs"]["verifier_version"] == [0.0, 0.0]
