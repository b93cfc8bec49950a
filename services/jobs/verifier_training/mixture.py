"""The round mixture of the prover–verifier game's verifier training data.

Each round the verifier is trained from its initialisation on samples from every round so far: an equal share
per round, each batch balanced 50/50 correct/incorrect, a constant number of solutions per problem (half
correct, half incorrect, so every problem contributes Bradley–Terry pairs). Problems are held out by a hash of
their text, so a problem held out in one round is held out in every round.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.common.samples import BASE_ROUND, LabelledSample


def is_held_out(problem: str, fraction: float) -> bool:
    """Whether a problem belongs to the held-out evaluation set (by hash: stable across rounds and seeds)."""
    bucket = int.from_bytes(hashlib.sha256(b"verifier-held-out:" + problem.encode()).digest()[:8], "big")
    return bucket / 2**64 < fraction


@dataclass
class ProblemSolutions:
    """The training solutions of one problem in one round, by label."""

    problem: str
    correct: list[LabelledSample] = field(default_factory=list)
    incorrect: list[LabelledSample] = field(default_factory=list)


@dataclass(frozen=True)
class RoundMixture:
    """Training problems usable for pairs, by round; held-out samples; what was left out and why."""

    rounds: dict[int, list[ProblemSolutions]]
    held_out: list[LabelledSample]
    one_label_problems: dict[int, int]
    """Per round, problems whose solutions were all correct or all incorrect (no pair; not trained on)."""

    def draw_batch(
        self, rng: random.Random, problems_per_batch: int, solutions_per_problem: int
    ) -> list[list[LabelledSample]]:
        """Problems grouped with their solutions: rounds drawn uniformly, then problems, then half of each label."""
        half = solutions_per_problem // 2
        round_ids = sorted(self.rounds)
        groups = []
        for _ in range(problems_per_batch):
            problem = rng.choice(self.rounds[rng.choice(round_ids)])
            groups.append(rng.choices(problem.correct, k=half) + rng.choices(problem.incorrect, k=half))
        return groups

    def summary(self) -> dict[str, int]:
        """Counts for the training report."""
        counts = {f"{_name(r)}_problems": len(p) for r, p in sorted(self.rounds.items())}
        counts |= {f"{_name(r)}_one_label_problems": n for r, n in sorted(self.one_label_problems.items())}
        counts["held_out_samples"] = len(self.held_out)
        return counts


def _name(round_: int) -> str:
    return "base" if round_ == BASE_ROUND else f"round{round_}"


class NoTrainablePairs(ValueError):
    """No problem of any round has both a correct and an incorrect solution: there is nothing to train on."""


def build_mixture(samples: Sequence[LabelledSample], held_out_fraction: float) -> RoundMixture:
    """Split samples into held-out and per-round training problems; raises ValueError when nothing is trainable."""
    held_out = [s for s in samples if is_held_out(s.problem, held_out_fraction)]
    by_round: dict[int, dict[str, ProblemSolutions]] = defaultdict(dict)
    for sample in samples:
        if is_held_out(sample.problem, held_out_fraction):
            continue
        problem = by_round[sample.round].setdefault(sample.problem, ProblemSolutions(sample.problem))
        (problem.correct if sample.correct else problem.incorrect).append(sample)
    rounds: dict[int, list[ProblemSolutions]] = {}
    one_label: dict[int, int] = {}
    for round_, problems in sorted(by_round.items()):
        usable = [p for p in problems.values() if p.correct and p.incorrect]
        one_label[round_] = len(problems) - len(usable)
        if usable:
            rounds[round_] = usable
    if not rounds:
        raise NoTrainablePairs(
            "no training problem has both a correct and an incorrect solution; "
            "sample several solutions per problem (the pairs and the 50/50 balance need both labels)"
        )
    return RoundMixture(rounds, held_out, one_label)
