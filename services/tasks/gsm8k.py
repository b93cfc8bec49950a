"""Real GSM8K from a local jsonl file (``question``, ``answer`` ending ``#### N``), checked like the toy task.

Nothing is downloaded: point ``load_gsm8k`` at a file you have (e.g. ``test.jsonl`` of the openai/gsm8k
release). Its calculator annotations ``<<48/2=24>>`` are the jargon that tandem training removes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from services.tasks.answers import extract_answer
from services.tasks.jargon import strip_annotations


@dataclass(frozen=True)
class Gsm8kProblem:
    question: str
    solution: str
    """The reference solution with its annotations, as in the file."""
    answer: int

    @property
    def plain_solution(self) -> str:
        return strip_annotations(self.solution)


def load_gsm8k(path: Path, limit: int | None = None) -> list[Gsm8kProblem]:
    """Problems from a GSM8K jsonl file; a malformed line raises ValueError naming its line number."""
    problems: list[Gsm8kProblem] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                question, solution = row["question"], row["answer"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{number}: not a GSM8K row ({error})") from error
            answer = extract_answer(solution)
            if answer is None:
                raise ValueError(f"{path}:{number}: answer has no '#### N' line")
            problems.append(Gsm8kProblem(question, solution, answer))
            if limit is not None and len(problems) >= limit:
                break
    return problems
