"""The toy world as a :class:`~services.tasks.base.Task`: the embedded default, byte-for-byte today's formats."""

from __future__ import annotations

from services.tasks import answers, jargon, toy
from services.tasks.base import Problem, Split, TextTask
from services.tasks.styles import render_plain

TRAIN_PROBLEMS = 4000
"""Problems a split yields when no count is asked for (the toy world can draw any number)."""


class ToyTask(TextTask):
    """Generated GSM8K-style problems; answers ``#### N``; ``<<…>>`` annotations are its jargon."""

    name = "toy"

    def problems(self, split: Split, count: int | None = None, seed: int = 0) -> list[Problem]:
        drawn = toy.generate(split, TRAIN_PROBLEMS if count is None else count, seed)
        return [Problem(p.question, str(p.answer), render_plain(p)) for p in drawn]

    def extract_answer(self, solution: str) -> str | None:
        found = answers.extract_answer(solution)
        return None if found is None else str(found)

    def is_jargon(self, solution: str) -> bool | None:
        return jargon.is_jargon(solution)
