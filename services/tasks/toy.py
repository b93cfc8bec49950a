"""The toy world's task: short GSM8K-style word problems of 2–4 arithmetic steps on small integers.

Numbers stay small on purpose (single-digit operands, running values 1–99) so that tiny character-level
models trained on 2 CPU cores get the arithmetic right. Splits are fixed by a hash of the question text,
so train, validation and test never share a problem whatever the seed or count.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Literal, get_args

Split = Literal["train", "validation", "test"]
Role = Literal["helpful", "sneaky"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")

NAMES = {
    "Ann": "She",
    "Ben": "He",
    "Cal": "He",
    "Dee": "She",
    "Eve": "She",
    "Gus": "He",
    "Ivy": "She",
    "Max": "He",
}
ITEMS = ("apples", "pens", "cards", "eggs", "shells", "coins", "stamps", "beads")
MAX_VALUE = 99


@dataclass(frozen=True)
class ArithmeticStep:
    left: int
    op: str
    right: int
    result: int


@dataclass(frozen=True)
class ToyProblem:
    question: str
    steps: tuple[ArithmeticStep, ...]
    answer: int

    @property
    def split(self) -> Split:
        return split_of(self.question)


def split_of(question: str) -> Split:
    """80 / 10 / 10 by a hash of the text: a problem's split never depends on how it was drawn."""
    bucket = int.from_bytes(hashlib.sha256(question.encode()).digest()[:4], "big") % 10
    return "test" if bucket == 9 else "validation" if bucket == 8 else "train"


def _apply(left: int, op: str, right: int) -> int:
    return left + right if op == "+" else left - right if op == "-" else left * right


def _next_operation(rng: random.Random, value: int) -> tuple[str, int, str] | None:
    """One more step on the running value: (op, operand, sentence template), or None if none fits.

    Additions never carry and subtractions never borrow (the units digits alone decide), and only single-digit
    values are doubled or tripled: every step is then a table look-up plus a copied tens digit, which a tiny
    model learns on 2 CPU cores; multi-digit carries would take it hours.
    """
    units = value % 10
    options: list[tuple[str, int, str]] = []
    for operand in range(1, 10):
        if units + operand <= 9:
            options.append(("+", operand, f"{{pronoun}} gets {operand} more."))
        if operand <= units and value - operand >= 1:
            options.append(("-", operand, f"{{pronoun}} gives away {operand}."))
    if value <= 9:
        options += [("*", 2, "{pronoun} doubles them."), ("*", 3, "{pronoun} triples them.")]
    if not options:
        return None
    op = rng.choice(sorted({o[0] for o in options}))  # each operation kind equally likely
    return rng.choice([o for o in options if o[0] == op])


def draw_problem(rng: random.Random) -> ToyProblem:
    """One random problem (any split)."""
    name = rng.choice(sorted(NAMES))
    item = rng.choice(ITEMS)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    if rng.random() < 0.5:
        first = ArithmeticStep(a, "*", b, a * b)
        sentences = [f"{name} has {a} bags of {b} {item}."]
    else:
        first = ArithmeticStep(a, "+", b, a + b)
        sentences = [f"{name} has {a} {item} and finds {b} more."]
    steps = [first]
    for _ in range(rng.randint(1, 3)):
        nxt = _next_operation(rng, steps[-1].result)
        if nxt is None:
            break
        op, operand, sentence = nxt
        steps.append(ArithmeticStep(steps[-1].result, op, operand, _apply(steps[-1].result, op, operand)))
        sentences.append(sentence.format(pronoun=NAMES[name]))
    sentences.append(f"How many {item} now?")
    return ToyProblem(" ".join(sentences), tuple(steps), steps[-1].result)


def generate(split: Split, count: int, seed: int = 0) -> list[ToyProblem]:
    """``count`` distinct problems of one split, reproducible from ``seed``."""
    rng = random.Random(f"toy-{seed}-{split}")
    seen: set[str] = set()
    problems: list[ToyProblem] = []
    attempts = 0
    while len(problems) < count:
        attempts += 1
        if attempts > 200 * count + 10_000:
            raise RuntimeError(f"could not draw {count} distinct {split} problems")
        problem = draw_problem(rng)
        if problem.split == split and problem.question not in seen:
            seen.add(problem.question)
            problems.append(problem)
    return problems


def format_prompt(question: str, role: Role | None = None) -> str:
    """What a model is conditioned on; in the prover–verifier game the role leads the line."""
    return f"{role}: {question}\n" if role else f"{question}\n"


def problem_from_prompt(prompt: str) -> str:
    """Undo :func:`format_prompt`: drop an optional leading role and the trailing newline."""
    for role in get_args(Role):
        if prompt.startswith(f"{role}: "):
            prompt = prompt[len(role) + 2 :]
            break
    return prompt.removesuffix("\n")


def format_verifier_input(question: str, solution: str) -> str:
    """What the verifier scores: the problem, then the solution (its tokenizer appends EOS as the read-out)."""
    return f"{question}\n{solution}"


def with_mistake(problem: ToyProblem, rng: random.Random) -> ToyProblem:
    """The same problem solved with one wrong step result, carried through to a wrong final answer."""
    index = rng.randrange(len(problem.steps))
    steps = list(problem.steps)
    wrong = steps[index].result + rng.choice([d for d in (-3, -2, -1, 1, 2, 3) if steps[index].result + d >= 0])
    steps[index] = ArithmeticStep(steps[index].left, steps[index].op, steps[index].right, wrong)
    for k in range(index + 1, len(steps)):
        left = steps[k - 1].result
        steps[k] = ArithmeticStep(left, steps[k].op, steps[k].right, _apply(left, steps[k].op, steps[k].right))
    return ToyProblem(problem.question, tuple(steps), steps[-1].result)
