"""Solutions are split into steps at line ends: one reasoning step per line, the ``#### N`` line included."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    start: int
    """Offset of the step's first character in the solution."""
    end: int
    """Offset just past the step, its newline included: ``solution[:end]`` is the prefix up to this step."""
    text: str
    """The step without its newline."""


def split_steps(solution: str) -> list[Step]:
    """Non-empty lines of the solution, with their spans; blank lines belong to no step."""
    steps: list[Step] = []
    start = 0
    while start < len(solution):
        newline = solution.find("\n", start)
        end = len(solution) if newline == -1 else newline + 1
        text = solution[start:end].rstrip("\n")
        if text.strip():
            steps.append(Step(start, end, text))
        start = end
    return steps


def step_ends(solution: str) -> list[int]:
    """Offsets where steps end, strictly increasing; the last equals len(solution) unless it ends in blanks."""
    return [step.end for step in split_steps(solution)]
