"""verl 0.9 (installed without its GPU dependencies) loads our ``compute_score`` with its own loader and calls it
from its ``naive`` reward manager; the reward is the verifier's score of (extra_info question, response)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from transformers import AutoTokenizer
from verl import DataProto
from verl.trainer.ppo.reward import load_reward_manager

from services.learner.integrations import verl as verl_adapter
from services.tasks import toy
from tests.integration.integrations.conftest import MODELS, PROBLEMS, Services


@pytest.fixture
def service_env(services: Services, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in services.env().items():
        monkeypatch.setenv(key, value)
    verl_adapter._client.cache_clear()  # the client reads the env on first use
    yield
    verl_adapter._client().close()
    verl_adapter._client.cache_clear()


def one_sample(tokenizer: object, question: str, solution: str, answer: int, info: dict[str, object]) -> DataProto:
    """One rollout as verl's reward loop sees it: prompt and response ids, mask, and the dataset's fields."""
    prompt = tokenizer(toy.format_prompt(question), return_tensors="pt")["input_ids"]  # type: ignore[operator]
    response = tokenizer(solution, return_tensors="pt")["input_ids"]  # type: ignore[operator]
    return DataProto.from_single_dict(
        {
            "prompts": prompt,
            "responses": response,
            "attention_mask": torch.ones(1, prompt.shape[1] + response.shape[1], dtype=torch.long),
            "data_source": np.array(["toy"], dtype=object),
            "reward_model": np.array([{"ground_truth": str(answer)}], dtype=object),
            "extra_info": np.array([info], dtype=object),
        }
    )


@pytest.mark.asyncio(loop_scope="module")  # the module's services run on the module's loop
async def test_naive_reward_manager_scores_with_the_verifier(services: Services, service_env: None) -> None:
    config = OmegaConf.create(
        {
            "reward": {
                "custom_reward_function": {"path": verl_adapter.__file__, "name": "compute_score", "reward_kwargs": {}},
                "reward_manager": {"source": "register", "name": "naive"},
            }
        }
    )
    tokenizer = AutoTokenizer.from_pretrained(MODELS / "strong")
    manager = load_reward_manager(config, tokenizer)
    problems = PROBLEMS[:3]
    solutions = [f"{p.answer} in all.\n#### {p.answer}" for p in problems[:2]] + ["1 in all.\n#### -1"]
    results = [
        await manager.run_single(one_sample(tokenizer, p.question, s, p.answer, {"question": p.question, "index": i}))
        for i, (p, s) in enumerate(zip(problems, solutions, strict=True))
    ]
    expected = await services.scores([(p.question, s) for p, s in zip(problems, solutions, strict=True)])
    assert [r["reward_score"] for r in results] == pytest.approx(expected, abs=1e-5)
    assert [r["reward_extra_info"]["correct"] for r in results] == [1.0, 1.0, 0.0]
    assert all(r["reward_extra_info"]["verifier_version"] == 0.0 for r in results)


def test_missing_problem_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="extra_info needs the problem text under one of question, problem"):
        verl_adapter.compute_score("toy", "#### 3", "3", extra_info={"index": 0})
