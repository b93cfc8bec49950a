"""Evaluation of the policy during a run: solo and handoff accuracy, jargon rate, legibility, game metrics."""

from __future__ import annotations

import random
from collections.abc import Sequence
from statistics import fmean

from services.learner.clients.segments import SegmentWriter
from services.learner.clients.verifier import VerifierClient
from services.learner.clients.weak_model import WeakModelClient
from services.learner.evaluation.legibility_metrics import legibility_metrics
from services.learner.evaluation.scored import ScoredSample
from services.learner.rl.policy import TransformersPolicy
from services.learner.rl.rollout import Rollout, RolloutOptions, new_rollouts, run_tandem
from services.learner.rl.schedule import SOLO, HandoffSchedule
from services.tasks.base import Problem
from services.tasks.prompts import PromptFormat

HANDOFF = HandoffSchedule(strategy="alternating_step", max_gap_tokens=1 << 30)
"""Policy and weak model alternate one step (line) each, starting with the policy: the tandem paper's handoff test."""


async def write_solutions(
    policy: TransformersPolicy,
    weak: SegmentWriter,
    prompt_format: PromptFormat,
    prompts: Sequence[str],
    options: RolloutOptions,
    seed: int,
) -> tuple[list[Rollout], list[str]]:
    """Rollouts for rendered text prompts and their decoded solutions."""
    prompt_ids = [prompt_format.encode(p) for p in prompts]
    rollouts = new_rollouts(prompt_ids, options, policy.context_window, seed)
    await run_tandem(rollouts, policy, weak, options)
    return rollouts, [policy.decode(r.response_ids) for r in rollouts]


async def evaluate_policy(
    policy: TransformersPolicy,
    weak: WeakModelClient,
    prompt_format: PromptFormat,
    problems: Sequence[Problem],
    max_new_tokens: int,
    seed: int,
    verifier: VerifierClient | None = None,
) -> dict[str, float]:
    """The run's evaluation metrics on ``problems`` (held-out test problems)."""
    task = prompt_format.task
    prompts = [prompt_format.render(p.question) for p in problems]
    greedy = RolloutOptions(SOLO, max_new_tokens, policy_temperature=0.0, weak_temperature=0.0)
    _, solo = await write_solutions(policy, weak, prompt_format, prompts, greedy, seed)
    sampled_options = RolloutOptions(SOLO, max_new_tokens, policy_temperature=1.0)
    _, sampled = await write_solutions(policy, weak, prompt_format, prompts, sampled_options, seed + 1)
    handoff_options = RolloutOptions(HANDOFF, max_new_tokens, policy_temperature=0.0, weak_temperature=0.0)
    _, handoff = await write_solutions(policy, weak, prompt_format, prompts, handoff_options, seed + 2)
    written = [(p, s) for p, s in zip(prompts, sampled, strict=True) if s]
    weak_log_probs = await weak.mean_log_probs([p for p, _ in written], [s for _, s in written])

    def accuracy(solutions: Sequence[str]) -> float:
        return fmean(task.is_correct(s, p.answer) for s, p in zip(solutions, problems, strict=True))

    metrics = {
        "solo_accuracy": accuracy(solo),
        "sampled_accuracy": accuracy(sampled),
        "handoff_accuracy": accuracy(handoff),
        "legibility_ce": -fmean(weak_log_probs) if weak_log_probs else float("nan"),
        "mean_solution_chars": fmean(len(s) for s in sampled),
    }
    # Jargon in the policy's own (greedy) solutions, the ones solo accuracy grades; and at temperature 1. A task
    # without a style marker (math) reports neither.
    solo_jargon, sampled_jargon = [task.is_jargon(s) for s in solo], [task.is_jargon(s) for s in sampled]
    if None not in solo_jargon and None not in sampled_jargon:
        metrics["jargon_rate"] = fmean(bool(j) for j in solo_jargon)
        metrics["sampled_jargon_rate"] = fmean(bool(j) for j in sampled_jargon)
    if verifier is not None:
        metrics |= await _game_metrics(policy, weak, verifier, prompt_format, problems, max_new_tokens, seed + 3)
    return metrics


async def _game_metrics(
    policy: TransformersPolicy,
    weak: SegmentWriter,
    verifier: VerifierClient,
    prompt_format: PromptFormat,
    problems: Sequence[Problem],
    max_new_tokens: int,
    seed: int,
    per_role: int = 2,
) -> dict[str, float]:
    """Helpful and sneaky solutions (solo, sampled), scored: accuracy, sneaky fool rate, AUC, best-of-n."""
    roles = [role for _ in range(per_role) for role in ("helpful", "sneaky")]
    targets = [(p, role) for p in problems for role in roles]
    options = RolloutOptions(SOLO, max_new_tokens, policy_temperature=1.0)
    prompts = [prompt_format.render(p.question, r) for p, r in targets]
    _, texts = await write_solutions(policy, weak, prompt_format, prompts, options, seed)
    task = prompt_format.task
    scores, version = await verifier.score([(p.question, t) for (p, _), t in zip(targets, texts, strict=True)])
    samples = [
        ScoredSample(problem_id=p.question, role=role, correct=task.is_correct(t, p.answer), score=v)
        for (p, role), t, v in zip(targets, texts, scores, strict=True)
    ]
    metrics = legibility_metrics(samples, best_of_n=2 * per_role, seed=random.Random(seed).randrange(1 << 30))
    metrics["verifier_version"] = float(version)
    return metrics
