"""MATH-style data from local jsonl: rows ``{"problem", "solution"}`` (answer: its last ``\\boxed{…}``) or ``answer``.

Answers are LaTeX and are compared by Hugging Face's ``math-verify`` (parsed to sympy, equal up to equivalence:
``\\frac{1}{2}`` = ``0.5``, ``2\\sqrt{2}`` = ``\\sqrt{8}``), not by hand-written normalisation; it runs in worker
processes with a hard timeout (see :mod:`services.tasks.math_equivalence` for why). The task has no style marker.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from services.tasks.base import Problem
from services.tasks.jsonl_data import JsonlTask, required_text
from services.tasks.math_equivalence import LatexEquivalence, shared_checker

_BOXES = ("\\boxed", "\\fbox")


def _braced(text: str, brace: int) -> str | None:
    """The content of the group opening at ``text[brace] == "{"``, up to its matching brace; None if unclosed.

    Escaped braces (``\\{``, ``\\}``, as in a set ``\\{1, 2\\}``) do not count.
    """
    depth, i = 0, brace
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return text[brace + 1 : i]
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{…}`` (or ``\\fbox{…}``), braces balanced; None when there is none.

    ``\\boxed 5`` (no braces, a few MATH solutions have it) boxes the text up to the next ``$`` or line end. A last
    box left unclosed (a truncated answer) gives None rather than an earlier box: the solution did not finish
    stating its answer, and an earlier box is often an intermediate result.
    """
    start, box = max((text.rfind(box), box) for box in _BOXES)
    if start < 0:
        return None
    after = start + len(box)
    brace = after
    while brace < len(text) and text[brace] == " ":
        brace += 1
    if brace < len(text) and text[brace] == "{":
        content = _braced(text, brace)
    elif brace > after:
        content = re.split(r"[$\n]", text[brace:], maxsplit=1)[0]
    else:
        return None
    if content is None or not content.strip():
        return None
    return content.strip()


class MathTask(JsonlTask):
    """MATH-format data: ``Problem.answer`` is LaTeX (``answer`` or the last box of ``solution``)."""

    name = "math"

    def __init__(self, path: Path | str, checker: LatexEquivalence | None = None) -> None:
        super().__init__(path)
        self._checker = checker

    def problem_from_row(self, row: dict[str, Any], where: str) -> Problem:
        question = required_text(row, "problem", where)
        solution = row.get("solution", "")
        if not isinstance(solution, str):
            raise ValueError(f"{where}: field 'solution' must be a string")
        answer = row.get("answer")
        if isinstance(answer, int | float) and not isinstance(answer, bool):
            answer = str(answer)
        if answer is not None and not isinstance(answer, str):
            raise ValueError(f"{where}: field 'answer' must be a string or a number")
        answer = answer.strip() if answer and answer.strip() else last_boxed(solution)
        if not answer:
            raise ValueError(f"{where}: needs an 'answer' or a 'solution' with a \\boxed{{...}} answer")
        return Problem(question, answer, solution)

    def extract_answer(self, solution: str) -> str | None:
        return last_boxed(solution)

    def is_correct(self, solution: str, gold: str) -> bool:
        """math-verify: ``verify(parse(f"${gold}$"), parse(f"${answer}$"))`` with the solution's last boxed answer."""
        answer = self.extract_answer(solution)
        if answer is None:
            return False
        return (self._checker or shared_checker()).equal(gold, answer)
