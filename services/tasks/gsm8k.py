"""GSM8K from local jsonl data: rows ``{"question": …, "answer": "…\\n#### N"}``, answers compared as numbers.

Nothing is downloaded: point the task at a file, or at a folder holding GSM8K's ``train.jsonl`` and ``test.jsonl``
(validation is then taken from train.jsonl by a hash of the question; see :mod:`services.tasks.jsonl_data`).
The calculator annotations ``<<48/2=24>>`` of its reference solutions are its jargon, the style tandem training
removes.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from services.tasks import jargon
from services.tasks.base import Problem
from services.tasks.jsonl_data import JsonlTask, required_text

# The number after the last "####": a leading minus, thousands separators and decimals allowed ("$" tolerated).
_FINAL = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)")


def normalise_number(text: str) -> str | None:
    """``"1,234"`` → ``"1234"``, ``"72.0"`` → ``"72"``, ``"-0.50"`` → ``"-0.5"``; None when it is no number."""
    try:
        value = Decimal(text.replace(",", "").strip())
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return f"{value.normalize():f}"


def final_number(solution: str) -> str | None:
    """The number after the last ``####``, normalised; None when the solution states none."""
    matches = _FINAL.findall(solution)
    return normalise_number(matches[-1]) if matches else None


class Gsm8kTask(JsonlTask):
    """GSM8K-format data: ``Problem.answer`` is the ``#### N`` number (``"1234"``), ``solution`` the reference text."""

    name = "gsm8k"

    def problem_from_row(self, row: dict[str, Any], where: str) -> Problem:
        question, solution = required_text(row, "question", where), required_text(row, "answer", where)
        answer = final_number(solution)
        if answer is None:
            raise ValueError(f"{where}: answer has no '#### N' line")
        return Problem(question, answer, solution)

    def extract_answer(self, solution: str) -> str | None:
        return final_number(solution)

    def is_correct(self, solution: str, gold: str) -> bool:
        """Numeric equality of the solution's ``#### N`` and ``gold`` (``"1,234"``, ``"72.0"`` accepted)."""
        expected = normalise_number(gold)
        if expected is None:
            raise ValueError(f"gold answer {gold!r} is not a number")
        return self.extract_answer(solution) == expected

    def is_jargon(self, solution: str) -> bool | None:
        return jargon.is_jargon(solution)
