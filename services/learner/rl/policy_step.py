"""One policy-training step: rollouts for a batch of problems, rewards, group advantages, one update."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from statistics import fmean

import torch

from services.learner.clients.segments import SegmentWriter
from services.learner.rl.authorship import author_weights
from services.learner.rl.policy import TransformersPolicy
from services.learner.rl.policy_loss import group_advantages, keyed_advantages
from services.learner.rl.rollout import Rollout, RolloutOptions, new_rollouts, run_tandem
from services.learner.rl.trainer import PolicyTrainer, TrainItem
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
    trained_ids: tuple[int, ...]
    """The tokens the update trains on: the response, plus the EOS that ended it (stopping is learnt too)."""
    trained_by_policy: tuple[bool, ...]
    """Whether the policy wrote each trained token (weak-model tokens get the weight λ)."""

    def token_weights(self, junior_token_weight: float) -> tuple[float, ...]:
        """Loss weight per trained token: 1 for the policy's, λ = ``junior_token_weight`` for the weak model's."""
        return tuple(author_weights(self.trained_by_policy, junior_token_weight))


def attempt(
    task: Task, problem: Problem, role: Role | None, rollout: Rollout, solution: str, eos_id: int | None
) -> Attempt:
    """One rollout labelled by the task's checker; ``eos_id``: the EOS to train when the writer named none."""
    answer = task.extract_answer(solution)
    correct = answer is not None and task.is_correct(solution, problem.answer)
    ids, by_policy, _ = rollout.completion(eos_id)
    jargon = task.is_jargon(solution)
    return Attempt(problem, role, rollout, solution, correct, answer is not None, jargon, tuple(ids), tuple(by_policy))


RewardFn = Callable[[Sequence[Attempt]], Awaitable[tuple[list[float], dict[str, float]]]]
"""Rewards for a step's attempts (in order) and extra metrics to log."""
CreditFn = Callable[[Sequence[Attempt], Sequence[float]], Awaitable[list[list[float]]]]
"""Per-trained-token advantages of each attempt from its group advantage (deliberative credit assignment)."""


def correctness_reward(format_bonus: float) -> RewardFn:
    """Tandem reward: 1 for a correct joint solution, ``format_bonus`` for a ``####`` answer that is wrong, else 0."""

    async def reward(attempts: Sequence[Attempt]) -> tuple[list[float], dict[str, float]]:
        values = [1.0 if a.correct else format_bonus if a.answered else 0.0 for a in attempts]
        return values, {}

    return reward


def _roles(group: int, rng: random.Random, with_roles: bool) -> list[Role | None]:
    """The roles of one problem's group: none, or balanced helpful / sneaky (a stratified form of the paper's
    uniform per-sample draw: every problem gets both roles, so each role has a baseline to compare with)."""
    if not with_roles:
        return [None] * group
    roles: list[Role | None] = ["helpful", "sneaky"] * (group // 2)
    if group % 2:
        roles.append(rng.choice(("helpful", "sneaky")))
    return roles


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
    baseline_by_role: bool = False,
    role: Role | None = None,
) -> tuple[dict[str, float], list[Attempt]]:
    """Sample ``group_size`` rollouts per problem, reward, update.

    ``with_roles``: half of each problem's group is prompted helpful, half sneaky (the odd one drawn), and with
    ``baseline_by_role`` each rollout's advantage is relative to the rollouts of its problem *and role*.
    ``role``: every rollout prompted with this one role instead (the sneaky-only attack).
    """
    policy: TransformersPolicy = trainer.policy
    group = trainer.options.group_size
    rng = random.Random(seed)
    roles = [role] * group if role is not None else _roles(group, rng, with_roles)
    targets = [(p, r) for p in problems for r in roles]
    prompt_ids = [prompts.encode(prompts.render(p.question, role)) for p, role in targets]
    rollouts = new_rollouts(prompt_ids, options, policy.context_window, seed)
    await run_tandem(rollouts, policy, weak, options)
    task = prompts.task
    attempts = [
        attempt(task, p, role, r, policy.decode(r.response_ids), policy.tokenizer.eos_token_id)
        for (p, role), r in zip(targets, rollouts, strict=True)
    ]
    rewards, extra = await reward_fn(attempts)
    if baseline_by_role:
        group_relative = keyed_advantages(rewards, [(i // group, a.role) for i, a in enumerate(attempts)])
    else:
        group_relative = group_advantages(torch.tensor(rewards, dtype=torch.float64), group).tolist()
    advantages: Sequence[float] | list[list[float]] = group_relative
    if credit_fn is not None:
        advantages = await credit_fn(attempts, group_relative)
    weight = trainer.options.junior_token_weight
    items = [
        TrainItem(
            a.rollout.prompt_ids,
            a.trained_ids,
            a.token_weights(weight),
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
