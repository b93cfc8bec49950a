"""Final answers in the GSM8K convention: a solution ends with a line ``#### N``."""

from __future__ import annotations

import re

_FINAL = re.compile(r"####\s*(-?[\d,]*\d)")


def extract_answer(solution: str) -> int | None:
    """The integer after the last ``####`` (thousands separators allowed), or None if there is none."""
    matches = _FINAL.findall(solution)
    if not matches:
        return None
    try:
        return int(matches[-1].replace(",", ""))
    except ValueError:
        return None


def has_final_answer(solution: str) -> bool:
    """Well formatted: the solution states a final answer, right or wrong."""
    return extract_answer(solution) is not None


def is_correct(solution: str, gold: int) -> bool:
    return extract_answer(solution) == gold
