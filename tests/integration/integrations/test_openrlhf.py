"""OpenRLHF 0.11 drives our adapters through its own code, on CPU, against the real services on loopback.

- ``--train.agent_func_path``: a real ``RolloutRayActor`` (Ray, vLLM's CPU engine over the bundled strong model)
  loads ``openrlhf_agent.py`` with OpenRLHF's loader and runs it from ``generate_responses``; OpenRLHF's
  ``SamplesGenerator`` turns each result into an Experience whose action mask must cover exactly the policy's
  tokens. The same seed and schedule through our own learner loop (transformers policy) give the same tokens
  and the same authorship.
- ``--reward.remote_url`` with a ``.py`` file: OpenRLHF's ``SingleTurnAgentExecutor`` loads ``openrlhf_reward.py``
  and calls its ``reward_func``; rewards equal the verifier's scores.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator
from openrlhf.trainer.ray.vllm_engine import RolloutRayActor
from openrlhf.utils.agent import SingleTurnAgentExecutor
from transformers import AutoTokenizer
from vllm import SamplingParams

from services.common.client import open_channel
from services.common.genproto.legibility.v1 import weak_model_pb2_grpc
from services.common.reaper import guard_descendants
from services.decoding.vllm_heads import PAD_HEADS_ENV, PaddedHeadsWorkerExtension
from services.learner.clients.weak_model import WeakModelClient
from services.learner.integrations import openrlhf_agent, openrlhf_reward
from services.learner.integrations.tandem_agent import rollout_seed
from services.learner.rl.policy import TransformersPolicy
from services.learner.rl.rollout import RolloutOptions, new_rollout, run_tandem
from services.learner.rl.schedule import Author
from services.tasks import toy
from services.tasks.answers import is_correct
from tests.integration.integrations.conftest import MODELS, PROBLEMS, Services

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
on_module_loop = pytest.mark.asyncio(loop_scope="module")  # the module's services run on the module's loop

STRONG = MODELS / "strong"
WINDOW = 192  # the bundled models' context window = OpenRLHF's max_len here
SEED = 11
SAMPLES = 4
MAX_TOKENS = 80  # with the longest prompt (109 tokens) it fits the window: OpenRLHF would cut the prompt


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray cluster. Its raylet must register within a fixed 30 s; on a loaded machine it may not: retry."""
    for attempt in range(3):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def agent_actor(ray_cluster: None, services: Services) -> Any:
    """OpenRLHF's rollout actor as ``train_ppo_ray`` creates it, with our agent file and our services' env."""
    env = services.env(seed=str(SEED), agent_reward="correctness+verifier")
    env |= {PAD_HEADS_ENV: "1", "VLLM_CPU_KVCACHE_SPACE": "1"}  # vLLM's CPU kernels and the toy models' heads
    actor = RolloutRayActor.options(num_cpus=1, runtime_env={"env_vars": env}).remote(
        model=str(STRONG),
        tokenizer=str(STRONG),
        dtype="float32",
        seed=0,
        max_model_len=WINDOW,
        enforce_eager=True,
        worker_extension_cls=f"{PaddedHeadsWorkerExtension.__module__}.{PaddedHeadsWorkerExtension.__name__}",
        logprobs_mode="raw_logprobs",
        num_gpus=0,
        distributed_executor_backend=None,
        agent_func_path=openrlhf_agent.__file__,
    )
    # ray.shutdown() kills the actor, and the vLLM engine it started would run on (vllm-project/vllm#55510; one was
    # found 11 min after a CI run): the actor's process gets our reaper, which stops it.
    ray.get(actor.__ray_call__.remote(lambda _: guard_descendants()))
    return actor


def policy_flags(response: dict[str, Any]) -> list[bool]:
    """Per observation token: inside one of the response's action_ranges."""
    flags = [False] * len(response["observation_tokens"])
    for start, end in response["action_ranges"]:
        flags[start:end] = [True] * (end - start)
    return flags


@on_module_loop
async def test_agent_masks_weak_spans_and_matches_our_learner(services: Services, agent_actor: Any) -> None:
    tokenizer = AutoTokenizer.from_pretrained(STRONG)
    greedy = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, logprobs=1)
    problems = PROBLEMS[:2]
    responses: list[dict[str, Any]] = []
    for problem in problems:
        responses += await agent_actor.generate_responses.remote(
            prompt=toy.format_prompt(problem.question),
            label=str(problem.answer),
            sampling_params=greedy,
            max_length=WINDOW,
            hf_tokenizer=tokenizer,
            num_samples=SAMPLES,
        )
    assert len(responses) == SAMPLES * len(problems)

    # The same seeds and schedule through our own learner loop: transformers policy, same weak-model service.
    settings = services.settings(seed=SEED)
    options = RolloutOptions(settings.schedule, MAX_TOKENS, policy_temperature=0.0, weak_temperature=1.0)
    policy = TransformersPolicy.load(STRONG, torch_threads=1)
    rollouts = []
    for problem in problems:
        prompt = toy.format_prompt(problem.question)
        for k in range(SAMPLES):
            rollouts.append(new_rollout(policy.encode(prompt), options, WINDOW, rollout_seed(SEED, prompt, k)))
    channel = open_channel(services.weak.server.address)
    try:
        await run_tandem(rollouts, policy, WeakModelClient(weak_model_pb2_grpc.WeakModelServiceStub(channel)), options)
    finally:
        await channel.close()

    generator = object.__new__(SamplesGenerator)
    weak_tokens_total = 0
    for response, rollout in zip(responses, rollouts, strict=True):
        start = len(rollout.prompt_ids)
        observation, flags = response["observation_tokens"], policy_flags(response)
        ended = rollout.ended_by_eos
        response_ids = observation[start : len(observation) - int(ended)]
        assert response_ids == rollout.response_ids  # greedy policy + seeded weak model: the same text
        assert flags[start : start + len(response_ids)] == [a is Author.POLICY for a in rollout.authorship.authors]
        assert not any(flags[:start])
        if ended:  # EOS appended, in the action span only when the policy wrote it
            assert observation[-1] == tokenizer.eos_token_id
            assert flags[-1] == (rollout.ended_by is Author.POLICY)

        # OpenRLHF's own conversion: action_mask[i] is for token i + 1 of the sequence.
        experience = generator._process_response_into_experience(response, max_len=WINDOW)
        mask = experience.action_mask[0].tolist()
        assert mask == [int(f) for f in flags[1:]]
        weak_positions = [i for i, f in enumerate(flags) if not f and i >= start]
        assert all(mask[i - 1] == 0 for i in weak_positions)
        weak_tokens_total += sum(a is Author.WEAK for a in rollout.authorship.authors)

        logs = response["extra_logs"]
        assert logs["senior_token_frac"] == pytest.approx(rollout.authorship.senior_token_frac)
        assert logs["num_handoffs"] == rollout.authorship.num_handoffs
        assert experience.info["senior_token_frac"].item() == pytest.approx(logs["senior_token_frac"])
    assert weak_tokens_total > 0  # the weak model did write: the mask was tested on real weak spans

    # Reward = correctness + the verifier's score of (problem, solution), as configured.
    solutions = [policy.decode(r.response_ids) for r in rollouts]
    problem_texts = [p.question for p in problems for _ in range(SAMPLES)]
    scores = await services.scores(list(zip(problem_texts, solutions, strict=True)))
    answers = [p.answer for p in problems for _ in range(SAMPLES)]
    for response, solution, score, answer in zip(responses, solutions, scores, answers, strict=True):
        correct = float(is_correct(solution, answer))
        assert response["reward"] == pytest.approx(correct + score, abs=1e-5)
        assert response["scores"] == correct
        assert response["extra_logs"]["verifier_score"] == pytest.approx(score, abs=1e-5)


@on_module_loop
async def test_openrlhf_loads_our_reward_func_and_rewards_are_verifier_scores(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in services.env().items():
        monkeypatch.setenv(key, value)
    openrlhf_reward._client.cache_clear()  # the client reads the env on first use
    executor = SingleTurnAgentExecutor(remote_rm_url=openrlhf_reward.__file__)
    problems = PROBLEMS[:3]
    prompts = [toy.format_prompt(p.question) for p in problems]
    solutions = [f"{p.answer} in all.\n#### {p.answer}" for p in problems[:2]] + ["7 in all.\n#### -7"]
    queries = [p + s + "<|endoftext|>" for p, s in zip(prompts, solutions, strict=True)]
    results = await executor._fetch_rewards_via_func(queries, prompts, [str(p.answer) for p in problems])
    expected = await services.scores([(p.question, s) for p, s in zip(problems, solutions, strict=True)])
    got = [float(r["rewards"][0]) for r in results]
    assert got == pytest.approx(expected, abs=1e-5)
    # With labels, the 0..1 filtering score is correctness (the last solution's answer is wrong).
    assert [float(r["scores"][0]) for r in results] == [1.0, 1.0, 0.0]
    assert [float(r["extra_logs"]["correct"][0]) for r in results] == [1.0, 1.0, 0.0]
    openrlhf_reward._client().close()
    openrlhf_reward._client.cache_clear()


def test_agent_file_is_what_openrlhf_loads() -> None:
    from openrlhf.trainer.ray.vllm_engine import _load_agent_executor
    from openrlhf.utils.agent import AgentExecutorBase

    executor = _load_agent_executor(str(Path(openrlhf_agent.__file__)))
    assert isinstance(executor, AgentExecutorBase)
