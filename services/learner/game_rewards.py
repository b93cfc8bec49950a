"""Prover rewards of the prover–verifier game (Kirchner et al. 2024, arXiv 2407.13692): SRC, CGC, goodharting.

Reading of SRC's "V' = V − mean of V over the role-conditioned batch for the problem": the batch is what the
role-conditioned prover produced in this step, each sample's role drawn per sample (helpful or sneaky); the mean is
over every sample of the same problem in that batch, both roles together (``center_by="problem"``). The baseline
is then the prover's own average convincingness on that problem, so a sneaky-incorrect solution is rewarded only
when it is more convincing than the prover's typical solution — helpful ones included. ``center_by="problem_role"``
is the other reading (centre within each role) for comparison. svijayakumar2/PMV (``pmv-original/pmv/reward.py``)
centres over the whole batch regardless of problem, which equals ours when a batch holds one problem; it keeps the
same sign rule and the −1 for V' ≤ 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from services.common.genproto.legibility.v1 import learner_pb2

Role = Literal["helpful", "sneaky"]
GameRewardKind = Literal["src", "cgc", "goodhart"]
CGC_PENALTY = -2.0
"""V0: the CGC reward of a sample whose correctness does not match its role."""


@dataclass(frozen=True)
class ScoredSample:
    """One prover solution, labelled and scored by the verifier."""

    problem_id: str
    role: Role
    correct: bool
    score: float
    """The verifier's score V(x, z)."""

    def __post_init__(self) -> None:
        if self.role not in ("helpful", "sneaky"):
            raise ValueError(f"role must be helpful or sneaky; got {self.role!r}")

    @property
    def helpful(self) -> bool:
        return self.role == "helpful"

    @property
    def role_aligned(self) -> bool:
        """Helpful and correct, or sneaky and incorrect."""
        return self.helpful == self.correct


def src_rewards(
    samples: Sequence[ScoredSample], center_by: Literal["problem", "problem_role"] = "problem"
) -> list[float]:
    """Signed relative convincingness: R = (2·correct − 1)·(2·helpful − 1)·V' if V' > 0, else −1."""
    if center_by not in ("problem", "problem_role"):
        raise ValueError(f"center_by must be problem or problem_role; got {center_by!r}")

    def key(sample: ScoredSample) -> tuple[str, ...]:
        return (sample.problem_id,) if center_by == "problem" else (sample.problem_id, sample.role)

    by_group: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for sample in samples:
        by_group[key(sample)].append(sample.score)
    means = {group: sum(scores) / len(scores) for group, scores in by_group.items()}

    rewards = []
    for sample in samples:
        relative = sample.score - means[key(sample)]
        sign = (2 * sample.correct - 1) * (2 * sample.helpful - 1)
        rewards.append(sign * relative if relative > 0 else -1.0)
    return rewards


def cgc_rewards(samples: Sequence[ScoredSample], penalty: float = CGC_PENALTY) -> list[float]:
    """Correctness-gated convincingness: R = V if helpful == correct, else V0 = ``penalty``."""
    return [sample.score if sample.role_aligned else penalty for sample in samples]


def goodhart_rewards(samples: Sequence[ScoredSample]) -> list[float]:
    """Iterative goodharting: R = V, roles ignored."""
    return [sample.score for sample in samples]


def game_rewards(samples: Sequence[ScoredSample], kind: GameRewardKind = "src") -> list[float]:
    """The prover reward of each sample, in order."""
    if kind == "src":
        return src_rewards(samples)
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
