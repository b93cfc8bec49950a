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
from services.tasks.prompts import PromptFormat, strip_end_tokens


@functools.cache
def _client() -> RewardClient:
    return RewardClient()


def split_query(query: str, prompt: str, prompts: PromptFormat, index: int = 0) -> tuple[str, str]:
    """(problem, solution) of one OpenRLHF query: the prompt's problem (the task's parser, chat templates included),
    and the rest of the text without the tokenizer's EOS / PAD strings."""
    if not query.startswith(prompt):
        raise ValueError(f"queries[{index}]: does not start with prompts[{index}]")
    try:
        problem, _ = prompts.parse(prompt)
    except ValueError as error:
        raise ValueError(f"prompts[{index}]: {error}") from error
    return problem, strip_end_tokens(query[len(prompt) :], prompts.tokenizer)


def reward_func(queries: list[str], prompts: list[str], labels: list[Any], **kwargs: Any) -> dict[str, Any]:
    """OpenRLHF's reward_func: ``{"rewards", "scores", "extra_logs"}`` as tensors (scores in 0..1 for filtering)."""
    client = _client()
    pairs = [split_query(q, p, client.prompts, i) for i, (q, p) in enumerate(zip(queries, prompts, strict=True))]
    rewards = client.rewards([p for p, _ in pairs], [s for _, s in pairs], labels)
    logs = [r.logs() for r in rewards]
    return {
        "rewards": torch.tensor([r.value for r in rewards], dtype=torch.float32),
        "scores": torch.tensor([r.filter_score for r in rewards], dtype=torch.float32),
        "extra_logs": {key: torch.tensor([entry[key] for entry in logs]) for key in logs[0]} if logs else {},
    }
