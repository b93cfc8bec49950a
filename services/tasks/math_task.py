"""MATH-style data from local jsonl (``problem`` with ``solution`` ending in ``\\boxed{…}``, or ``answer``).

Answers are LaTeX and are compared with Hugging Face's ``math-verify`` (parsed to sympy, equal up to
equivalence: ``\\frac{1}{2}`` = ``0.5``, ``2\\sqrt{2}`` = ``\\sqrt{8}``), not with hand-written normalisation. Its
timeouts use ``signal.alarm``, which works on the main thread only: elsewhere (services check answers in worker
threads and event loops) they are off. The task has no style marker (``is_jargon`` is None).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from services.tasks.base import Problem, Split, TextTask
from services.tasks.jsonl_data import required_text, split_rows

logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns on every call made with timeouts off
_BOXES = ("\\boxed", "\\fbox")


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{…}`` (or ``\\fbox{…}``), braces balanced; None when there is none."""
    start = max(text.rfind(box) for box in _BOXES)
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for i in range(brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            content = text[brace + 1 : i].strip()
            return content or None
    return None


def _timeout() -> int | None:
    return 5 if threading.current_thread() is threading.main_thread() else None


def answers_equal(gold: str, answer: str) -> bool:
    """math-verify's equivalence of two LaTeX answers."""
    from math_verify import parse, verify

    timeout = _timeout()
    parsed_gold = parse(f"${gold}$", parsing_timeout=timeout)  # type: ignore[arg-type]
    parsed = parse(f"${answer}$", parsing_timeout=timeout)  # type: ignore[arg-type]
    if not parsed_gold or not parsed:
        return gold.strip() == answer.strip()
    return bool(verify(parsed_gold, parsed, timeout_seconds=timeout))


def _problem(row: dict[str, Any], where: str) -> Problem:
    question = required_text(row, "problem", where)
    solution = row.get("solution") if isinstance(row.get("solution"), str) else ""
    answer = row.get("answer")
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        answer = last_boxed(solution or "")
    if not answer:
        raise ValueError(f"{where}: needs an 'answer' or a 'solution' with a \\boxed{{...}} answer")
    return Problem(question, answer.strip(), solution or "")


class MathTask(TextTask):
    """MATH-format data; ``problems`` keeps file order and ignores ``seed``."""

    name = "math"

    def __init__(self, path: Path) -> None:
        self.path = path

    def problems(self, split: Split, count: int | None = None, seed: int = 0) -> list[Problem]:
        problems = split_rows(self.path, split, _problem, lambda p: p.question)
        if not problems:
            raise ValueError(f"{self.path}: no {split} problems")
        return problems if count is None else problems[:count]

    def extract_answer(self, solution: str) -> str | None:
        return last_boxed(solution)

    def is_correct(self, solution: str, gold: str) -> bool:
        answer = self.extract_answer(solution)
        return answer is not None and answers_equal(gold, answer)
