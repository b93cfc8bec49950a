"""verl reward: ``compute_score`` scores a response with the verifier service (and/or checks the ground truth).

    reward.custom_reward_function.path=<this file> reward.custom_reward_function.name=compute_score

verl passes only the response text; the problem comes from ``extra_info["question"]`` (verl's GSM8K and MATH
preprocessing put it there) or ``extra_info["problem"]``. ``LEGIBILITY_REWARD`` picks the score: ``verifier``
(default), ``correctness`` (1/0 against ``ground_truth``) or ``correctness+verifier``.
"""

from __future__ import annotations

import functools
from typing import Any

from services.learner.integrations.rewards import RewardClient

PROBLEM_KEYS = ("question", "problem")


@functools.cache
def _client() -> RewardClient:
    return RewardClient()


def problem_of(extra_info: dict[str, Any] | None) -> str:
    for key in PROBLEM_KEYS:
        if extra_info and isinstance(extra_info.get(key), str):
            return str(extra_info[key])
    raise ValueError(f"extra_info needs the problem text under one of {', '.join(PROBLEM_KEYS)}")


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: dict[str, Any] | None = None, **kwargs: Any
) -> dict[str, float]:
    """verl's reward function: ``{"score": reward, ...parts}`` (verl logs every key of the dict)."""
    problem = problem_of(extra_info)
    labels = None if ground_truth is None else [ground_truth]
    (reward,) = _client().rewards([problem], [solution_str], labels)
    return {"score": reward.value, **reward.logs()}
