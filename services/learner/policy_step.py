"""One policy-training step: rollouts for a batch of problems, rewards, group advantages, one update."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from statistics import fmean

import torch

from services.learner.credit import token_advantages
from services.learner.policy import TransformersPolicy
from services.learner.policy_loss import group_advantages
from services.learner.rollout import Rollout, RolloutOptions, new_rollouts, run_tandem
from services.learner.segments import SegmentWriter
from services.learner.trainer import PolicyTrainer, TrainItem
from services.tasks.base import Problem, Role, Task
from services.tasks.prompts import PromptFormat


@dataclass(frozen=True)
class Attempt:
    """One rollout of the step, decoded and labelled."""

    problem: Problem
    role: Role | None
    rollout: Rollout
    solution: str
    correct: bool
    """The task's checker says the solution's final answer equals the problem's."""
    answered: bool
    """The solution states a final answer (right or wrong)."""
    jargon: bool | None
    """The task's style marker (None when the task has none)."""


def attempt(task: Task, problem: Problem, role: Role | None, rollout: Rollout, solution: str) -> Attempt:
    """One rollout labelled by the task's checker."""
    answer = task.extract_answer(solution)
    correct = answer is not None and task.is_correct(solution, problem.answer)
    return Attempt(problem, role, rollout, solution, correct, answer is not None, task.is_jargon(solution))


RewardFn = Callable[[Sequence[Attempt]], Awaitable[tuple[list[float], dict[str, float]]]]
"""Rewards for a step's attempts (in order) and extra metrics to log."""
CreditFn = Callable[[Sequence[Attempt], Sequence[float]], Awaitable[list[list[float]]]]
"""Per-token rewards of each attempt, summing to its outcome reward (deliberative credit assignment)."""


def correctness_reward(format_bonus: float) -> RewardFn:
    """Tandem reward: 1 for a correct joint solution, ``format_bonus`` for a ``####`` answer that is wrong, else 0."""

    async def reward(attempts: Sequence[Attempt]) -> tuple[list[float], dict[str, float]]:
        values = [1.0 if a.correct else format_bonus if a.answered else 0.0 for a in attempts]
        return values, {}

    return reward


async def policy_step(
    trainer: PolicyTrainer,
    weak: SegmentWriter,
    prompts: PromptFormat,
    problems: Sequence[Problem],
    options: RolloutOptions,
    reward_fn: RewardFn,
    seed: int,
    with_roles: bool = False,
    credit_fn: CreditFn | None = None,
) -> tuple[dict[str, float], list[Attempt]]:
    """Sample ``group_size`` rollouts per problem (roles drawn per sample when ``with_roles``), reward, update."""
    policy: TransformersPolicy = trainer.policy
    group = trainer.options.group_size
    rng = random.Random(seed)
    targets = [(p, rng.choice(("helpful", "sneaky")) if with_roles else None) for p in problems for _ in range(group)]
    prompt_ids = [prompts.encode(prompts.render(p.question, role)) for p, role in targets]
    rollouts = new_rollouts(prompt_ids, options, policy.context_window, seed)
    await run_tandem(rollouts, policy, weak, options)
    task = prompts.task
    attempts = [
        attempt(task, p, role, r, policy.decode(r.response_ids)) for (p, role), r in zip(targets, rollouts, strict=True)
    ]
    rewards, extra = await reward_fn(attempts)
    advantages: list[float] | list[list[float]]
    if credit_fn is None:
        advantages = group_advantages(torch.tensor(rewards), group).tolist()
    else:
        advantages = token_advantages(await credit_fn(attempts, rewards), rewards, group)
    weight = trainer.options.junior_token_weight
    items = [
        TrainItem(
            a.rollout.prompt_ids,
            tuple(a.rollout.response_ids),
            tuple(a.rollout.authorship.loss_weights(weight)),
            adv if isinstance(adv, float) else tuple(adv),
        )
        for a, adv in zip(attempts, advantages, strict=True)
    ]
    stats = await asyncio.to_thread(trainer.update, items)  # off the event loop: health and watchers stay live
    metrics = {
        "reward": fmean(rewards),
        "accuracy": fmean(a.correct for a in attempts),
        "senior_token_frac": fmean(a.rollout.authorship.senior_token_frac for a in attempts),
        "handoffs": fmean(a.rollout.authorship.num_handoffs for a in attempts),
        "response_tokens": fmean(len(a.rollout.authorship) for a in attempts),
        **stats,
        **extra,
    }
    if all(a.jargon is not None for a in attempts):
        metrics["jargon_rate"] = fmean(bool(a.jargon) for a in attempts)
    return metrics, attempts
