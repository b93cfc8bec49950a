"""The toy task: reproducible, disjoint splits; both styles render the same arithmetic; checkers agree."""

from __future__ import annotations

import random

import pytest

from services.tasks import toy
from services.tasks.answers import extract_answer, has_final_answer, is_correct
from services.tasks.jargon import annotations, is_jargon, jargon_rate, strip_annotations
from services.tasks.steps import split_steps, step_ends
from services.tasks.styles import render_jargon, render_plain


def test_generation_is_reproducible_and_distinct() -> None:
    first = toy.generate("train", 500, seed=3)
    again = toy.generate("train", 500, seed=3)
    other = toy.generate("train", 500, seed=4)
    assert [p.question for p in first] == [p.question for p in again]
    assert len({p.question for p in first}) == 500
    assert [p.question for p in first] != [p.question for p in other]


def test_splits_never_share_a_problem() -> None:
    questions = {split: {p.question for p in toy.generate(split, 2000, seed=1)} for split in toy.SPLITS}
    assert not questions["train"] & questions["test"]
    assert not questions["train"] & questions["validation"]
    assert not questions["validation"] & questions["test"]
    # Another seed draws other test problems, still none of them in the seed-1 train split.
    assert not {p.question for p in toy.generate("test", 2000, seed=2)} & questions["train"]


def test_problems_have_two_to_four_steps_with_small_values() -> None:
    problems = toy.generate("train", 3000, seed=0)
    counts = {n: sum(len(p.steps) == n for p in problems) for n in (2, 3, 4)}
    assert sum(counts.values()) == 3000 and min(counts.values()) > 300
    for problem in problems:
        for step in problem.steps:
            assert 1 <= step.result <= toy.MAX_VALUE
            assert step.right <= 9
        for step in problem.steps[1:]:  # no carries or borrows after the first step
            if step.op == "+":
                assert step.left % 10 + step.right <= 9
            elif step.op == "-":
                assert step.right <= step.left % 10
            else:
                assert step.left <= 9
        assert problem.answer == problem.steps[-1].result


def test_plain_and_jargon_render_the_same_steps() -> None:
    rng = random.Random(0)
    problem = toy.ToyProblem(
        "q",
        (
            toy.ArithmeticStep(4, "*", 7, 28),
            toy.ArithmeticStep(28, "+", 9, 37),
            toy.ArithmeticStep(37, "-", 5, 32),
        ),
        32,
    )
    assert render_plain(problem) == "4*7=28.\n28+9=37.\n37-5=32.\n#### 32"
    assert render_jargon(problem) == "<<4*7=82>>\n<<+9=73>>\n<<-5=23>>\n#### 32"
    for _ in range(200):
        drawn = toy.draw_problem(rng)
        plain, jargon = render_plain(drawn), render_jargon(drawn)
        assert is_correct(plain, drawn.answer) and is_correct(jargon, drawn.answer)
        assert not is_jargon(plain) and len(annotations(jargon)) == len(drawn.steps)
        assert len(split_steps(plain)) == len(split_steps(jargon)) == len(drawn.steps) + 1


def test_answer_extraction() -> None:
    assert extract_answer("2+2=4.\n#### 4") == 4
    assert extract_answer("#### 1,234") == 1234
    assert extract_answer("#### -7") == -7
    assert extract_answer("#### 3\n#### 5") == 5  # the last answer counts
    assert extract_answer("no answer here") is None
    assert not has_final_answer("4*7=28.")
    assert not is_correct("#### 27", 28)


def test_step_splitting_gives_prefix_offsets() -> None:
    solution = "4*7=28.\n\n28+9=37.\n#### 37"
    steps = split_steps(solution)
    assert [s.text for s in steps] == ["4*7=28.", "28+9=37.", "#### 37"]
    assert step_ends(solution) == [8, 18, 25]
    assert solution[: steps[1].end] == "4*7=28.\n\n28+9=37.\n"


def test_jargon_detection_and_rate() -> None:
    assert jargon_rate(["<<1+1=2>>\n#### 2", "1+1=2.\n#### 2", "x<<a>>", "plain"]) == pytest.approx(0.5)
    assert jargon_rate([]) == 0.0
    assert strip_annotations("48/2=<<48/2=24>>24 clips") == "48/2=24 clips"


def test_prompt_states_the_role() -> None:
    assert toy.format_prompt("How many?") == "How many?\n"
    assert toy.format_prompt("How many?", "sneaky") == "sneaky: How many?\n"
