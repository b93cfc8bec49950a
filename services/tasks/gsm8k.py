"""GSM8K from local jsonl data (``question``, ``answer`` ending ``#### N``): the task and the loader.

Nothing is downloaded: point the task at a file or at a folder holding GSM8K's ``train.jsonl`` and ``test.jsonl``.
Answers are compared as numbers (``1,234`` = ``1234``, ``72.0`` = ``72``); the calculator annotations
``<<48/2=24>>`` of its reference solutions are its jargon, the style tandem training removes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from services.tasks import jargon
from services.tasks.base import Problem, Split, TextTask
from services.tasks.jsonl_data import read_rows, required_text, split_rows

_FINAL = re.compile(r"####\s*(-?[\d,]*\.?\d+)")


def normalise_number(text: str) -> str | None:
    """``"1,234"`` → ``"1234"``, ``"72.0"`` → ``"72"``, ``"-0.50"`` → ``"-0.5"``; None when it is no number."""
    try:
        value = Decimal(text.replace(",", "").strip())
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    normal = value.normalize()
    return f"{normal:f}" if normal != normal.to_integral_value() else str(int(normal))


def final_number(solution: str) -> str | None:
    """The number after the last ``####``, normalised; None when the solution states none."""
    matches = _FINAL.findall(solution)
    return normalise_number(matches[-1]) if matches else None


@dataclass(frozen=True)
class Gsm8kProblem:
    question: str
    solution: str
    """The reference solution with its annotations, as in the file."""
    answer: int

    @property
    def plain_solution(self) -> str:
        return jargon.strip_annotations(self.solution)


def _problem(row: dict[str, Any], where: str) -> Problem:
    question, solution = required_text(row, "question", where), required_text(row, "answer", where)
    answer = final_number(solution)
    if answer is None:
        raise ValueError(f"{where}: answer has no '#### N' line")
    return Problem(question, answer, solution)


def load_gsm8k(path: Path, limit: int | None = None) -> list[Gsm8kProblem]:
    """Problems from a GSM8K jsonl file; a malformed line raises ValueError naming its line number."""
    rows = read_rows(path, _problem)[:limit]
    return [Gsm8kProblem(p.question, p.solution, int(Decimal(p.answer))) for p in rows]


class Gsm8kTask(TextTask):
    """GSM8K-format data; ``problems`` keeps file order and ignores ``seed`` (the learner draws from them)."""

    name = "gsm8k"

    def __init__(self, path: Path) -> None:
        self.path = path

    def problems(self, split: Split, count: int | None = None, seed: int = 0) -> list[Problem]:
        problems = split_rows(self.path, split, _problem, lambda p: p.question)
        if not problems:
            raise ValueError(f"{self.path}: no {split} problems")
        return problems if count is None else problems[:count]

    def extract_answer(self, solution: str) -> str | None:
        return final_number(solution)

    def is_jargon(self, solution: str) -> bool | None:
        return jargon.is_jargon(solution)


__all__ = ["Gsm8kProblem", "Gsm8kTask", "load_gsm8k", "normalise_number"]
