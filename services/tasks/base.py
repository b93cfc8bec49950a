"""The Task protocol: what a dataset's problems look like, how they are asked, answered, checked and cut into steps.

Every service, the learner and the adapters ask one :class:`Task` object instead of knowing a format (as
lm-evaluation-harness asks its task classes), so a new dataset is one new class. Chat templates are not the
task's business: :class:`~services.tasks.prompts.PromptFormat` wraps a task's user message in a tokenizer's
template when one is asked for.

:class:`TextTask` holds the formats the three bundled tasks share — a prompt is the user message and a newline,
the user message is the question (led by ``helpful: `` / ``sneaky: `` in the prover–verifier game), the verifier
reads the question, a newline and the solution, one reasoning step per line — so a task only says what differs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, Protocol, get_args, runtime_checkable

from services.tasks.steps import Step, split_steps

Split = Literal["train", "validation", "test"]
Role = Literal["helpful", "sneaky"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")
ROLES: tuple[Role, ...] = get_args(Role)


@dataclass(frozen=True)
class Problem:
    """One problem of a task: its question, its gold final answer as text, and a reference solution if known."""

    question: str
    answer: str
    """Integers for toy and GSM8K (``"42"``), LaTeX for MATH (``"\\frac{1}{2}"``); compared by the task's checker."""
    solution: str = ""
    """The dataset's reference solution ('' when it has none)."""


def split_of(question: str) -> Split:
    """80 / 10 / 10 by a hash of the text: a problem's split never depends on how it was drawn or its file order."""
    bucket = int.from_bytes(hashlib.sha256(question.encode()).digest()[:4], "big") % 10
    return "test" if bucket == 9 else "validation" if bucket == 8 else "train"


@runtime_checkable
class Task(Protocol):
    """A dataset and its formats."""

    @property
    def name(self) -> str: ...

    def problems(self, split: Split, count: int | None = None, seed: int = 0) -> list[Problem]:
        """Problems of ``split`` (all of them when ``count`` is None), reproducible from ``seed``."""
        ...

    def user_message(self, question: str, role: Role | None = None) -> str:
        """What the model is asked: the content of the user turn (the role, in the game, leads it)."""
        ...

    def parse_user_message(self, message: str) -> tuple[str, Role | None]:
        """Undo :meth:`user_message`: (question, role). Raises ValueError when ``message`` holds no question."""
        ...

    def format_prompt(self, question: str, role: Role | None = None) -> str:
        """The prompt without a chat template (what the model is conditioned on)."""
        ...

    def parse_prompt(self, prompt: str) -> tuple[str, Role | None]:
        """Undo :meth:`format_prompt`: (question, role). Raises ValueError when ``prompt`` holds no question."""
        ...

    def extract_answer(self, solution: str) -> str | None:
        """The final answer a solution states, normalised as the checker compares it; None if it states none."""
        ...

    def is_correct(self, solution: str, gold: str) -> bool:
        """Whether the solution's final answer equals ``gold``."""
        ...

    def split_steps(self, solution: str) -> list[Step]:
        """The solution's reasoning steps with their character spans (what ScoreSteps and DCA score)."""
        ...

    def is_jargon(self, solution: str) -> bool | None:
        """The task's style marker (calculator jargon); None when the task has none."""
        ...

    def verifier_input(self, question: str, solution: str) -> str:
        """What the verifier reads, without a chat template (its tokenizer adds EOS as the read-out)."""
        ...


def stated_answer(task: Task, label: str) -> str | None:
    """The gold answer a dataset label gives, as ``task`` compares it: a bare answer (``42``, ``"1,234"``,
    ``"\\frac{1}{2}"``) or a reference solution stating it (``"… #### 42"``, ``"… \\boxed{\\frac12}"``); None when it
    states none. One reading of labels for every caller (``/get_reward`` and the RL-stack adapters)."""
    text = label.strip()
    if not text:
        return None
    for stated in (text, f"#### {text}", f"\\boxed{{{text}}}"):
        found = task.extract_answer(stated)
        if found is not None:
            return found
    return None


class TextTask:
    """The formats the bundled tasks share; subclasses give problems, answers and (optionally) jargon."""

    name = "text"

    def problems(self, split: Split, count: int | None = None, seed: int = 0) -> list[Problem]:
        raise NotImplementedError

    def user_message(self, question: str, role: Role | None = None) -> str:
        return f"{role}: {question}" if role else question

    def parse_user_message(self, message: str) -> tuple[str, Role | None]:
        role: Role | None = None
        for candidate in ROLES:
            if message.startswith(f"{candidate}: "):
                message, role = message[len(candidate) + 2 :], candidate
                break
        if not message.strip():
            raise ValueError("the prompt holds no question")
        return message, role

    def format_prompt(self, question: str, role: Role | None = None) -> str:
        return f"{self.user_message(question, role)}\n"

    def parse_prompt(self, prompt: str) -> tuple[str, Role | None]:
        return self.parse_user_message(prompt.removesuffix("\n"))

    def extract_answer(self, solution: str) -> str | None:
        raise NotImplementedError

    def is_correct(self, solution: str, gold: str) -> bool:
        found = self.extract_answer(solution)
        return found is not None and found == gold

    def has_final_answer(self, solution: str) -> bool:
        """Well formatted: the solution states a final answer, right or wrong."""
        return self.extract_answer(solution) is not None

    def split_steps(self, solution: str) -> list[Step]:
        return split_steps(solution)

    def is_jargon(self, solution: str) -> bool | None:
        return None

    def verifier_input(self, question: str, solution: str) -> str:
        return f"{question}\n{solution}"
