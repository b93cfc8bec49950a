"""The math task: boxed answers extracted with balanced braces, compared by math-verify (a table that goes red)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from services.tasks.math_task import MathTask, last_boxed

DATA = Path(__file__).resolve().parents[2] / "data" / "math_sample.jsonl"
TASK = MathTask(DATA)

EQUAL = [
    ("\\frac{1}{2}", "0.5"),
    ("\\frac{1}{2}", "\\dfrac12"),
    ("\\frac{1}{2}", "\\tfrac{1}{2}"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("\\frac{\\pi}{2}", "\\pi/2"),
    ("-3", "-3.0"),
    ("9\\pi", "\\pi \\cdot 9"),
    ("(-2, 2)", "(-2,2)"),
    ("\\{1, 2, 3\\}", "\\{3, 2, 1\\}"),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
    ("391", "391"),
    ("1000", "1,000"),
    ("\\frac{5}{6}", "\\frac{10}{12}"),
]
DIFFERENT = [
    ("\\frac{1}{3}", "0.33"),
    ("-3", "3"),
    ("\\sqrt{2}", "2"),
    ("(-2, 2)", "[-2, 2]"),
    ("9\\pi", "9"),
    ("\\frac{5}{6}", "\\frac{6}{5}"),
    ("12", "13"),
    ("\\{1, 2\\}", "\\{1, 2, 3\\}"),
]


@pytest.mark.parametrize(("gold", "answer"), EQUAL)
def test_equivalent_answers_are_correct(gold: str, answer: str) -> None:
    assert TASK.is_correct(f"So the answer is $\\boxed{{{answer}}}$.", gold)


@pytest.mark.parametrize(("gold", "answer"), DIFFERENT)
def test_near_misses_are_wrong(gold: str, answer: str) -> None:
    assert not TASK.is_correct(f"So the answer is $\\boxed{{{answer}}}$.", gold)


def test_the_last_box_with_nested_braces_is_the_answer() -> None:
    assert last_boxed("first \\boxed{1}, then \\boxed{\\frac{a}{b^{2}}} done") == "\\frac{a}{b^{2}}"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("no box") is None and last_boxed("\\boxed{unclosed") is None
    assert not TASK.is_correct("no boxed answer here: 5/6", "\\frac{5}{6}")


def test_checking_works_off_the_main_thread() -> None:
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(TASK.is_correct("\\boxed{0.5}", "\\frac12")))
    thread.start()
    thread.join(timeout=60)
    assert results == [True]


def test_the_sample_file_loads_split_by_hash_and_checks_its_own_solutions() -> None:
    train, test = TASK.problems("train"), TASK.problems("test")
    assert len(train) + len(test) + len(TASK.problems("validation")) == 22
    assert {p.question for p in train}.isdisjoint(p.question for p in test)
    assert all(TASK.is_correct(p.solution, p.answer) for p in train + test)
    assert TASK.is_jargon(train[0].solution) is None


def test_malformed_rows_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1?", "answer": "2"}\n{"problem": "no answer", "solution": "none"}\n')
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bad))}:2: needs an 'answer'"):
        MathTask(bad).problems("train")
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bad))}:1: not JSON"):
        MathTask(bad).problems("test")
