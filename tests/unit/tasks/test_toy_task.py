"""ToyTask is the toy world's old functions behind the Task protocol, byte for byte, on 200 generated problems."""

from __future__ import annotations

import random

from services.tasks import answers, jargon, steps, toy
from services.tasks.base import ROLES, Problem, Task
from services.tasks.styles import render_jargon, render_plain
from services.tasks.toy_task import ToyTask

TOY = ToyTask()
PROBLEMS = toy.generate("train", 200, seed=7)


def test_prompts_and_verifier_input_are_the_old_formats() -> None:
    assert isinstance(TOY, Task)
    for problem in PROBLEMS:
        question = problem.question
        for role in (None, *ROLES):
            prompt = TOY.format_prompt(question, role)
            assert prompt == toy.format_prompt(question, role)
            assert TOY.parse_prompt(prompt) == (toy.problem_from_prompt(prompt), role) == (question, role)
        solution = render_plain(problem)
        assert TOY.verifier_input(question, solution) == toy.format_verifier_input(question, solution)


def test_answers_steps_and_jargon_are_the_old_checkers() -> None:
    rng = random.Random(0)
    verdicts: dict[str, list[bool]] = {"plain": [], "jargon": [], "mistake": []}
    for problem in PROBLEMS:
        solutions = {
            "plain": render_plain(problem),
            "jargon": render_jargon(problem),
            "mistake": render_plain(toy.with_mistake(problem, rng)),
        }
        for kind, solution in solutions.items():
            correct = TOY.is_correct(solution, str(problem.answer))
            assert correct == answers.is_correct(solution, problem.answer)
            assert TOY.extract_answer(solution) == str(answers.extract_answer(solution))
            assert TOY.is_jargon(solution) == jargon.is_jargon(solution) == (kind == "jargon")
            assert TOY.split_steps(solution) == steps.split_steps(solution)
            verdicts[kind].append(correct)
    assert [sum(v) for v in verdicts.values()] == [200, 200, 0]  # the checker can say no
    assert TOY.extract_answer("no final line") is None and not TOY.is_correct("no final line", "3")


def test_problems_are_the_generated_ones_with_plain_solutions() -> None:
    for split in ("train", "test"):
        expected = [Problem(p.question, str(p.answer), render_plain(p)) for p in toy.generate(split, 50, seed=3)]
        assert TOY.problems(split, 50, seed=3) == expected
