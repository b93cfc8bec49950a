"""Jargon: calculator-style annotations ``<<...>>`` (GSM8K's, and the toy world's compressed steps).

A solution is jargon when it carries any annotation; the rate over a set of solutions is the share of jargon
solutions. The weak model never sees annotations in training, so it cannot follow them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ANNOTATION = re.compile(r"<<[^<>\n]*>>")


def annotations(text: str) -> list[str]:
    return ANNOTATION.findall(text)


def is_jargon(text: str) -> bool:
    return ANNOTATION.search(text) is not None


def jargon_rate(solutions: Iterable[str]) -> float:
    """Share of solutions containing jargon (0.0 for no solutions)."""
    flags = [is_jargon(s) for s in solutions]
    return sum(flags) / len(flags) if flags else 0.0


def strip_annotations(text: str) -> str:
    """GSM8K text without its calculator annotations: ``3*5=<<3*5=15>>15`` → ``3*5=15``."""
    return ANNOTATION.sub("", text)
