"""The math task: the last boxed answer (balanced braces), math-verify equivalence, loading, bounded checks."""

from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from services.tasks.base import SPLITS, split_of
from services.tasks.math_equivalence import LatexEquivalence
from services.tasks.math_task import MathTask, last_boxed

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "math_sample.jsonl"
TASK = MathTask(SAMPLE)

# (gold, boxed answer, equal): a checker that compares strings, or one that accepts anything, goes red.
TABLE = [
    ("\\frac{1}{2}", "0.5", True),
    ("\\frac{1}{2}", "\\dfrac12", True),
    ("\\frac{1}{2}", "\\tfrac{1}{2}", True),
    ("\\sqrt{8}", "2\\sqrt{2}", True),
    ("\\frac{\\pi}{2}", "\\pi/2", True),
    ("-3", "-3.0", True),
    ("9\\pi", "\\pi \\cdot 9", True),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
    ("\\frac{5}{6}", "\\frac{10}{12}", True),
    ("1000", "1,000", True),
    ("(-2, 2)", "(-2,2)", True),
    ("(-\\infty, 2]", "(-\\infty,2]", True),
    ("\\{-2, 3\\}", "\\{3, -2\\}", True),
    ("391", "391", True),
    ("\\frac{1}{3}", "0.33", False),
    ("-3", "3", False),
    ("\\sqrt{2}", "2", False),
    ("2\\pi", "6.28", False),
    ("(-2, 2)", "[-2, 2]", False),
    ("[1, 3)", "(1, 3)", False),
    ("\\{1, 2\\}", "\\{1, 2, 3\\}", False),
    ("\\frac{5}{6}", "\\frac{6}{5}", False),
    ("9\\pi", "9", False),
    ("12", "13", False),
]


@pytest.mark.parametrize(("gold", "answer", "equal"), TABLE)
def test_boxed_answers_are_compared_by_math_verify(gold: str, answer: str, equal: bool) -> None:
    assert TASK.is_correct(f"Hence the answer is $\\boxed{{{answer}}}$.", gold) is equal


def test_the_table_has_enough_cases_each_way() -> None:
    assert len(TABLE) >= 20 and sum(e for *_, e in TABLE) >= 10 and sum(not e for *_, e in TABLE) >= 10


def test_the_last_box_with_balanced_braces_is_the_answer() -> None:
    assert last_boxed("so $\\boxed{\\frac{a}{b}}$") == "\\frac{a}{b}"
    assert last_boxed("first \\boxed{1}, then \\boxed{\\frac{a}{b^{2}}} done") == "\\frac{a}{b^{2}}"
    assert last_boxed("\\boxed{1} and \\fbox{2}") == "2" and last_boxed("\\fbox{7} and \\boxed{8}") == "8"
    assert last_boxed("\\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"  # escaped braces do not close the box
    assert last_boxed("$\\boxed 5$.") == "5" and last_boxed("\\boxed { 6 }") == "6"
    assert last_boxed("\\boxed{1} then \\boxed{unclosed") is None  # a truncated last box is no answer
    assert [last_boxed(t) for t in ("no box", "\\boxed{}", "\\boxed{  }", "\\boxedx")] == [None] * 4


def test_a_solution_with_two_boxes_is_judged_by_the_last() -> None:
    solution = "Halfway: $\\boxed{2}$. Finally $\\boxed{\\frac{1}{2}}$."
    assert TASK.extract_answer(solution) == "\\frac{1}{2}"
    assert TASK.is_correct(solution, "0.5") and not TASK.is_correct(solution, "2")
    assert TASK.extract_answer("the answer is 5/6") is None
    assert not TASK.is_correct("the answer is 5/6", "\\frac{5}{6}")  # no box, no answer


def test_the_sample_loads_split_by_hash_and_its_solutions_check() -> None:
    splits = {split: TASK.problems(split) for split in SPLITS}
    assert {split: len(problems) for split, problems in splits.items()} == {"train": 21, "validation": 1, "test": 3}
    problems = [p for ps in splits.values() for p in ps]
    assert all(split_of(p.question) == split for split, ps in splits.items() for p in ps)
    answers = {p.answer for p in problems}
    assert {"\\frac{5}{6}", "5\\sqrt{2}", "-3", "9\\pi", "(-2, 2)", "\\{-2, 3\\}", "\\dfrac{3}{4}", "391"} <= answers
    assert "(-\\infty, 2]" in answers  # a row with "answer" and no solution
    with_solution = [p for p in problems if p.solution]
    assert len(with_solution) == 24
    assert all(TASK.is_correct(p.solution, p.answer) for p in with_solution)
    assert TASK.is_jargon(with_solution[0].solution) is None


def test_rows_with_an_answer_field(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        '{"problem": "P1", "answer": 12}\n'
        '{"problem": "P2", "answer": " \\\\frac{1}{2} ", "solution": "\\\\boxed{0.5}"}\n'
        '{"problem": "P3", "answer": "", "solution": "so \\\\boxed{7}"}\n'
    )
    task = MathTask(rows)
    got = {p.question: (p.answer, p.solution) for split in SPLITS for p in task._splits[split]}
    assert got == {"P1": ("12", ""), "P2": ("\\frac{1}{2}", "\\boxed{0.5}"), "P3": ("7", "so \\boxed{7}")}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"problem": "no answer", "solution": "it is 2"}', "needs an 'answer' or a 'solution' with a \\boxed{...}"),
        ('{"problem": "cut", "solution": "\\\\boxed{2"}', "needs an 'answer' or a 'solution' with a \\boxed{...}"),
        ('{"solution": "\\\\boxed{2}"}', "field 'problem' must be a non-empty string"),
        ('{"problem": "p", "solution": ["\\\\boxed{2}"]}', "field 'solution' must be a string"),
        ('{"problem": "p", "answer": {"value": 2}}', "field 'answer' must be a string or a number"),
        ("{not json", "not JSON"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1?", "answer": "2"}\n\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bad))}:3: {re.escape(message)}"):
        MathTask(bad)


def test_checks_run_from_worker_threads_and_event_loops() -> None:
    cases = [(g, a, e) for g, a, e in TABLE[:4] + TABLE[14:18]]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: TASK.is_correct(f"\\boxed{{{c[1]}}}", c[0]), cases))
    assert results == [e for *_, e in cases]

    async def in_a_loop() -> list[bool]:
        return await asyncio.gather(*(asyncio.to_thread(TASK.is_correct, "\\boxed{0.5}", g) for g in ("\\frac12", "2")))

    assert asyncio.run(in_a_loop()) == [True, False]


def test_a_runaway_check_is_cut_by_math_verifys_timeout_then_by_the_kill() -> None:
    # 10^{10^{10}} keeps sympy busy for minutes (math-verify without its timeouts, as threads must call it, hangs).
    soft = LatexEquivalence(workers=1, timeout_s=60, soft_timeout_s=1)
    hard = LatexEquivalence(workers=1, timeout_s=1.0, soft_timeout_s=600)
    try:
        assert soft.equal("3", "3") and hard.equal("3", "3")  # started
        (soft_worker,) = list(soft._idle.queue)
        began = time.monotonic()
        assert soft.equal("3", "10^{10^{10}}") is False
        assert time.monotonic() - began < 10
        assert list(soft._idle.queue) == [soft_worker] and soft_worker.process.poll() is None  # kept
        (hard_worker,) = list(hard._idle.queue)
        began = time.monotonic()
        assert hard.equal("3", "10^{10^{10}}") is False
        assert time.monotonic() - began < 5
        assert hard_worker.process.poll() is not None and hard._started == 0  # killed
        assert hard.equal("\\frac12", "0.5") is True  # a fresh worker takes over
    finally:
        soft.close()
        hard.close()
    assert soft_worker.process.poll() is not None
    with pytest.raises(RuntimeError, match="closed"):
        soft.equal("1", "1")
