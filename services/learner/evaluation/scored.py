"""A prover solution scored by the verifier: what the game's rewards and the legibility metrics both read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["helpful", "sneaky"]


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
