"""The two solution styles of the toy world.

plain   one readable step per line, ``4*7=28.`` then ``28+9=37.``, ending ``#### 37``.
jargon  calculator annotations in a compressed notation the weak model never sees: the running value is
        implied and results are written least-significant digit first (``<<4*7=82>>`` then ``<<+9=73>>``),
        which is easier for a left-to-right model to compute and unreadable to one trained on plain text.
"""

from __future__ import annotations

from typing import Literal

from services.tasks.toy import ToyProblem

Style = Literal["plain", "jargon"]


def _reversed_digits(value: int) -> str:
    return str(value)[::-1]


def render_plain(problem: ToyProblem) -> str:
    lines = [f"{s.left}{s.op}{s.right}={s.result}." for s in problem.steps]
    return "\n".join([*lines, f"#### {problem.answer}"])


def render_jargon(problem: ToyProblem) -> str:
    first, *rest = problem.steps
    lines = [f"<<{first.left}{first.op}{first.right}={_reversed_digits(first.result)}>>"]
    lines += [f"<<{s.op}{s.right}={_reversed_digits(s.result)}>>" for s in rest]
    return "\n".join([*lines, f"#### {problem.answer}"])


def render(problem: ToyProblem, style: Style) -> str:
    return render_plain(problem) if style == "plain" else render_jargon(problem)
