"""Prover rewards of the prover–verifier game (Kirchner et al. 2024, arXiv 2407.13692): SRC, CGC, goodharting.

SRC's "V' = V − mean of V over the role-conditioned batch for the problem": by default (``baseline="problem_role"``)
the mean is over the step's samples of the same problem *and role*, so a sneaky solution competes with the other
sneaky solutions to that problem and a helpful one with the helpful ones; a sample not above its role's mean gets
−1. ``baseline="problem"`` pools both roles of a problem (this project's earlier reading, kept for comparison).
svijayakumar2/PMV (``pmv-original/pmv/reward.py``) centres over the whole batch regardless of problem; it keeps the
same sign rule and the −1 for V' ≤ 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

from services.common.genproto.legibility.v1 import learner_pb2
from services.learner.evaluation.scored import ScoredSample

SrcBaseline = Literal["problem_role", "problem"]
SRC_BASELINES: tuple[str, ...] = ("problem_role", "problem")
GameRewardKind = Literal["src", "cgc", "goodhart"]
CGC_PENALTY = -2.0
"""V0: the CGC reward of a sample whose correctness does not match its role."""


def baseline_key(sample: ScoredSample, baseline: SrcBaseline) -> tuple[str, ...]:
    """The samples a sample is compared with: those of its problem and role, or of its problem."""
    if baseline not in SRC_BASELINES:
        raise ValueError(f"baseline must be problem_role or problem; got {baseline!r}")
    return (sample.problem_id, sample.role) if baseline == "problem_role" else (sample.problem_id,)


def src_rewards(samples: Sequence[ScoredSample], baseline: SrcBaseline = "problem_role") -> list[float]:
    """Signed relative convincingness: R = (2·correct − 1)·(2·helpful − 1)·V' if V' > 0, else −1."""

    by_group: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for sample in samples:
        by_group[baseline_key(sample, baseline)].append(sample.score)
    means = {group: sum(scores) / len(scores) for group, scores in by_group.items()}

    rewards = []
    for sample in samples:
        relative = sample.score - means[baseline_key(sample, baseline)]
        sign = (2 * sample.correct - 1) * (2 * sample.helpful - 1)
        rewards.append(sign * relative if relative > 0 else -1.0)
    return rewards


def cgc_rewards(samples: Sequence[ScoredSample], penalty: float = CGC_PENALTY) -> list[float]:
    """Correctness-gated convincingness: R = V if helpful == correct, else V0 = ``penalty``."""
    return [sample.score if sample.role_aligned else penalty for sample in samples]


def goodhart_rewards(samples: Sequence[ScoredSample]) -> list[float]:
    """Iterative goodharting: R = V, roles ignored."""
    return [sample.score for sample in samples]


def game_rewards(
    samples: Sequence[ScoredSample], kind: GameRewardKind = "src", baseline: SrcBaseline = "problem_role"
) -> list[float]:
    """The prover reward of each sample, in order (``baseline``: SRC's centring)."""
    if kind == "src":
        return src_rewards(samples, baseline)
    if kind == "cgc":
        return cgc_rewards(samples)
    if kind == "goodhart":
        return goodhart_rewards(samples)
    raise ValueError(f"kind must be src, cgc or goodhart; got {kind!r}")


def reward_kind_from_proto(value: learner_pb2.GameReward.ValueType) -> GameRewardKind:
    """learner.proto's GameReward as a kind; GAME_REWARD_UNSPECIFIED means SRC."""
    kinds: dict[int, GameRewardKind] = {
        learner_pb2.GAME_REWARD_UNSPECIFIED: "src",
        learner_pb2.GAME_REWARD_SRC: "src",
        learner_pb2.GAME_REWARD_CGC: "cgc",
        learner_pb2.GAME_REWARD_GOODHART: "goodhart",
    }
    if value not in kinds:
        raise ValueError(f"unknown GameReward {value}")
    return kinds[value]
