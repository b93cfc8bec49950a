"""The verifier's vllm engine (vLLM's pooling runner, bundled models/verifier) on the real server: the same scores as
the transformers engine within 1e-4 through Score, ScoreSteps and /get_reward.

One vLLM engine start (~30 s on 2 cores) for the whole test.
"""

from __future__ import annotations

import aiohttp
import pytest

from services.common.batching import PassThrough
from services.common.genproto.legibility.v1 import verifier_pb2
from services.tools.bench_verifier import bench_pairs
from services.verifier.model import load_verifier
from services.verifier.scorers import VllmScorer
from tests.integration.verifier.conftest import VERIFIER_MODEL, VerifierFactory

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


async def test_vllm_engine_scores_as_the_transformers_engine(start_server: VerifierFactory) -> None:
    pairs = bench_pairs()[:48]  # plain and jargon, right and wrong: distinct scores
    reference = load_verifier(VERIFIER_MODEL, engine="hf", hf_worker="thread")
    want = reference.forward(pairs)
    server = await start_server(engine="vllm", http_reward="verifier")
    model = server.app.model
    assert model.engine == "vllm" and isinstance(model._scorer, VllmScorer)
    assert isinstance(model._batcher, PassThrough)  # vLLM forms its own batches: rows go to it as they come

    items = [verifier_pb2.ScoreItem(problem=q, solution=s) for q, s in pairs]
    response = await server.stub.Score(verifier_pb2.ScoreRequest(items=items), timeout=120)
    got = [r.score for r in response.results]
    assert got == pytest.approx(want, abs=1e-4)
    assert max(got) - min(got) > 1.0  # the scores differ: not one row's copied
    assert response.model.sha256 == model.weights.sha256

    problem, solution = pairs[0]
    steps = await server.stub.ScoreSteps(
        verifier_pb2.ScoreStepsRequest(items=[verifier_pb2.ScoreStepsItem(problem=problem, solution=solution)]),
        timeout=120,
    )
    ends = [s.end for s in steps.results[0].steps]
    assert len(ends) >= 2
    prefixes = reference.forward([(problem, solution[:end]) for end in ends])
    assert [s.score for s in steps.results[0].steps] == pytest.approx(prefixes, abs=1e-4)

    prompt = model.prompts.render(problem)
    body = {"query": [prompt + solution], "prompts": [prompt]}
    url = f"http://127.0.0.1:{server.app.http_port}/get_reward"
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as reply:
        assert reply.status == 200
        rewards = (await reply.json())["rewards"]
    assert rewards == pytest.approx([want[0]], abs=1e-4)
    assert model.queue_depth == 0
