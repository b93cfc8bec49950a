"""OpenRLHF remote reward from the verifier over gRPC: pass this file's path to ``--reward.remote_url``.

OpenRLHF calls ``reward_func(queries, prompts, labels)`` in a worker thread, one sample per call; each query is the
prompt + response text with special tokens kept. ``LEGIBILITY_REWARD`` picks the reward: ``verifier`` (default,
the verifier's logit), ``correctness`` (1/0 against the label) or ``correctness+verifier``.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from services.learner.integrations.rewards import RewardClient
from services.tasks.toy import problem_from_prompt


@functools.cache
def _client() -> RewardClient:
    return RewardClient()


def split_query(query: str, prompt: str, eos_text: str) -> tuple[str, str]:
    """(problem, solution) of one OpenRLHF query: the prompt's problem, and the rest of the text without EOS."""
    if not query.startswith(prompt):
        raise ValueError("query does not start with its prompt")
    solution = query[len(prompt) :]
    while eos_text and solution.endswith(eos_text):
        solution = solution.removesuffix(eos_text)
    return problem_from_prompt(prompt), solution


def reward_func(queries: list[str], prompts: list[str], labels: list[Any], **kwargs: Any) -> dict[str, Any]:
    """OpenRLHF's reward_func: ``{"rewards", "scores", "extra_logs"}`` as tensors (scores in 0..1 for filtering)."""
    client = _client()
    pairs = [split_query(q, p, client.settings.eos_text) for q, p in zip(queries, prompts, strict=True)]
    rewards = client.rewards([p for p, _ in pairs], [s for _, s in pairs], labels)
    logs = [r.logs() for r in rewards]
    return {
        "rewards": torch.tensor([r.value for r in rewards], dtype=torch.float32),
        "scores": torch.tensor([r.filter_score for r in rewards], dtype=torch.float32),
        "extra_logs": {key: torch.tensor([entry[key] for entry in logs]) for key in logs[0]} if logs else {},
    }
