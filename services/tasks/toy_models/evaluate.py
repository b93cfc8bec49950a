"""Measurements of the toy models: solo accuracy, jargon rate, and handoff accuracy by style of the start.

Handoff: the strong model writes the first step, then the weak and the strong model alternate one step
(one line) each until a ``####`` line, as in Tandem-RLVR's evaluation. A plain start forbids ``<`` as the
first character; a jargon start begins with ``<<``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from transformers import PreTrainedModel, PreTrainedTokenizerFast

from services.tasks.answers import is_correct
from services.tasks.jargon import jargon_rate
from services.tasks.toy import ToyProblem, format_prompt
from services.tasks.toy_models.metrics import accuracy
from services.tasks.toy_models.sampling import complete

MAX_STEPS = 8


@dataclass(frozen=True)
class HandoffResult:
    accuracy: float
    solutions: list[str]


def solo_accuracy(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, problems: Sequence[ToyProblem]
) -> tuple[float, list[str]]:
    """Greedy accuracy of one model writing alone."""
    solutions = complete(model, tokenizer, [format_prompt(p.question) for p in problems])
    return accuracy([is_correct(s, p.answer) for s, p in zip(solutions, problems, strict=True)]), solutions


def sampled_jargon_rate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, problems: Sequence[ToyProblem], seed: int = 0
) -> float:
    """Share of jargon among solutions sampled at temperature 1."""
    prompts = [format_prompt(p.question) for p in problems]
    return jargon_rate(complete(model, tokenizer, prompts, temperature=1.0, seed=seed))


def handoff_accuracy(
    strong: PreTrainedModel,
    weak: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    problems: Sequence[ToyProblem],
    start: Literal["plain", "jargon"],
) -> HandoffResult:
    """Accuracy when strong and weak alternate steps, strong first, greedy, all problems in lockstep."""
    forced = "<<" if start == "jargon" else ""
    solutions = [forced for _ in problems]
    done = [False for _ in problems]
    for turn in range(MAX_STEPS):
        active = [i for i, finished in enumerate(done) if not finished]
        if not active:
            break
        model = strong if turn % 2 == 0 else weak
        steps = complete(
            model,
            tokenizer,
            [format_prompt(problems[i].question) + solutions[i] for i in active],
            max_new_tokens=24,
            stop_at_newline=True,
            banned_first_tokens=("<",) if turn == 0 and start == "plain" else (),
        )
        for i, step in zip(active, steps, strict=True):
            solutions[i] += step
            last_line = solutions[i].rstrip("\n").rsplit("\n", 1)[-1]
            done[i] = last_line.startswith("####") or not step.endswith("\n")
    flags = [is_correct(s, p.answer) for s, p in zip(solutions, problems, strict=True)]
    return HandoffResult(accuracy(flags), solutions)
