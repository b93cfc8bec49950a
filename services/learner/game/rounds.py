"""The prover–verifier game's parts of a run: role-conditioned rewards, DCA credit, round samples."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean

from services.common.artifacts import ArtifactStore
from services.common.samples import LabelledSample, put_samples, samples_uri
from services.learner.clients.segments import SegmentWriter
from services.learner.clients.verifier import VerifierClient
from services.learner.evaluation.evaluate import write_solutions
from services.learner.evaluation.scored import ScoredSample
from services.learner.game.rewards import GameRewardKind, SrcBaseline, game_rewards
from services.learner.rl.credit import dca_token_advantages
from services.learner.rl.policy import TransformersPolicy
from services.learner.rl.policy_step import Attempt, CreditFn, RewardFn
from services.learner.rl.rollout import RolloutOptions
from services.tasks.base import Problem
from services.tasks.prompts import PromptFormat


def game_reward(
    verifier: VerifierClient, kind: GameRewardKind, min_version: int, baseline: SrcBaseline = "problem_role"
) -> RewardFn:
    """Rewards from the verifier's scores of each attempt (SRC, CGC or goodharting); refuses older verifiers."""

    async def reward(attempts: Sequence[Attempt]) -> tuple[list[float], dict[str, float]]:
        scores, version = await verifier.score([(a.problem.question, a.solution) for a in attempts], min_version)
        samples = [
            ScoredSample(a.problem.question, a.role or "helpful", a.correct, v)
            for a, v in zip(attempts, scores, strict=True)
        ]
        helpful_correct = [s.score for s in samples if s.role == "helpful" and s.correct]
        sneaky_incorrect = [s.score for s in samples if s.role == "sneaky" and not s.correct]
        extra = {"verifier_version": float(version), "mean_score": fmean(scores)}
        extra["helpful_correct"] = float(len(helpful_correct))
        extra["sneaky_incorrect"] = float(len(sneaky_incorrect))
        if helpful_correct:
            extra["score_helpful_correct"] = fmean(helpful_correct)
        if sneaky_incorrect:
            extra["score_sneaky_incorrect"] = fmean(sneaky_incorrect)
        return game_rewards(samples, kind, baseline), extra

    return reward


def dca_credit(verifier: VerifierClient, policy: TransformersPolicy, min_version: int) -> CreditFn:
    """Group advantages split over steps by ``ScoreSteps`` changes (s_0 = 0, the centred verifier's neutral score)."""

    async def credit(attempts: Sequence[Attempt], advantages: Sequence[float]) -> list[list[float]]:
        scored = [i for i, a in enumerate(attempts) if a.solution.strip()]
        steps = await verifier.score_steps(
            [(attempts[i].problem.question, attempts[i].solution) for i in scored], min_version
        )
        step_scores: dict[int, list[tuple[int, float]]] = dict(zip(scored, steps, strict=True))
        return [
            dca_token_advantages(
                advantage, step_scores.get(i, []), policy.tokens_text(a.trained_ids), initial_score=0.0
            )
            for i, (a, advantage) in enumerate(zip(attempts, advantages, strict=True))
        ]

    return credit


CAUGHT_UP_MIN_SAMPLES = 4
"""Sneaky-incorrect solutions a step needs before its mean score can end the round: one lucky sample is noise."""


def sneaky_caught_up(metrics: dict[str, float]) -> bool:
    """The round's stop rule: sneaky-incorrect solutions (at least ``CAUGHT_UP_MIN_SAMPLES`` in the step) score on
    average as high as helpful-correct ones."""
    sneaky, helpful = metrics.get("score_sneaky_incorrect"), metrics.get("score_helpful_correct")
    enough = metrics.get("sneaky_incorrect", 0.0) >= CAUGHT_UP_MIN_SAMPLES
    return enough and sneaky is not None and helpful is not None and sneaky >= helpful


async def collect_round_samples(
    policy: TransformersPolicy,
    weak: SegmentWriter,
    prompt_format: PromptFormat,
    problems: Sequence[Problem],
    options: RolloutOptions,
    round_: int,
    seed: int,
    per_role: int = 2,
) -> list[LabelledSample]:
    """``per_role`` helpful and sneaky solutions per verifier-half problem from the current prover, labelled."""
    targets = [(p, role) for p in problems for _ in range(per_role) for role in ("helpful", "sneaky")]
    prompts = [prompt_format.render(p.question, role) for p, role in targets]
    _, texts = await write_solutions(policy, weak, prompt_format, prompts, options, seed)
    return [
        LabelledSample(
            problem=p.question,
            solution=t,
            correct=prompt_format.task.is_correct(t, p.answer),
            role=role,
            round=round_,
            source=f"prover@round{round_}",
        )
        for (p, role), t in zip(targets, texts, strict=True)
    ]


def store_round_samples(store: ArtifactStore, dataset: str, round_: int, samples: Sequence[LabelledSample]) -> str:
    """Store a round's samples once (a resumed run finds them there); returns their uri."""
    uri = samples_uri(dataset, round_)
    if not store.resolve(uri).exists():
        put_samples(store, dataset, round_, samples)
    return uri
