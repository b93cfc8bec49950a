"""The GSM8K task: hash splits of a file and per-file splits of a directory, numeric answers, file:line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from services.tasks.base import SPLITS, split_of
from services.tasks.gsm8k import Gsm8kTask, final_number, normalise_number
from services.tasks.jargon import strip_annotations

DATA = Path(__file__).resolve().parents[2] / "data"
SAMPLE = DATA / "gsm8k_sample.jsonl"
TASK = Gsm8kTask(SAMPLE)


def write(path: Path, lines: list[object]) -> Path:
    """Rows as jsonl; a str is written as the raw line (to craft bad JSON)."""
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_a_file_is_split_by_hash_disjoint_and_complete() -> None:
    splits = {split: TASK.problems(split) for split in SPLITS}
    assert {split: len(problems) for split, problems in splits.items()} == {"train": 30, "validation": 7, "test": 3}
    questions = [json.loads(line)["question"] for line in SAMPLE.read_text().splitlines()]
    assert sorted(p.question for ps in splits.values() for p in ps) == sorted(questions)  # every row, once
    for split, problems in splits.items():
        assert {split_of(p.question) for p in problems} == {split}
        # File order is kept within a split.
        assert [p.question for p in problems] == [q for q in questions if split_of(q) == split]


def test_problems_are_deterministic_the_first_count_and_ignore_the_seed() -> None:
    again = Gsm8kTask(SAMPLE)
    assert again.problems("train") == TASK.problems("train")
    assert TASK.problems("train", 5, seed=1) == TASK.problems("train", 5, seed=2) == TASK.problems("train")[:5]
    assert TASK.problems("test", 100) == TASK.problems("test") and len(TASK.problems("test", 0)) == 0
    first = TASK.problems("train", 1)[0]
    assert (first.answer, first.question[:11]) == ("108", "Mara picks ")


def test_reference_solutions_give_their_answers_and_are_jargon() -> None:
    problems = [p for split in SPLITS for p in TASK.problems(split)]
    assert sorted(int(p.answer) for p in problems)[-3:] == [2500, 8400, 13800]
    for problem in problems:
        assert problem.solution.endswith(f"#### {problem.answer}")
        assert TASK.extract_answer(problem.solution) == problem.answer
        assert TASK.is_correct(problem.solution, problem.answer)
        assert TASK.is_jargon(problem.solution) is True
        assert TASK.is_jargon(strip_annotations(problem.solution)) is False
    assert TASK.is_jargon("36*2 = 72.\n#### 72") is False


def test_a_directory_has_a_file_per_split_and_lends_validation_from_train() -> None:
    task = Gsm8kTask(DATA / "gsm8k_dir")
    train, validation, test = (task.problems(split) for split in SPLITS)
    assert [p.answer for p in train] == ["53", "18", "8", "62", "180", "210", "59"]
    assert [p.answer for p in validation] == ["22"]  # train.jsonl's row that hashes to validation
    assert [p.answer for p in test] == ["38", "27", "9", "41"]  # test.jsonl, whatever the hashes say
    # A train.jsonl row hashing to test stays in train: test has a file of its own.
    assert [split_of(p.question) for p in train].count("test") == 1
    assert not {p.question for p in train} & {p.question for p in validation + test}


def test_a_directory_with_train_only_splits_it_by_hash(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text(SAMPLE.read_text())
    task = Gsm8kTask(tmp_path)
    assert {split: task.problems(split) for split in SPLITS} == {split: TASK.problems(split) for split in SPLITS}


@pytest.mark.parametrize(
    ("solution", "gold", "correct"),
    [
        ("So 1,000+234 = 1,234.\n#### 1,234", "1234", True),
        ("#### 1234", "1,234", True),
        ("#### 72.0", "72", True),
        ("#### 72.", "72", True),  # a sentence's full stop
        ("#### $1,250", "1250", True),
        ("#### 2.50", "2.5", True),
        ("#### -5", "-5", True),
        ("#### 5", "-5", False),
        ("#### 73", "72", False),
        ("#### 7.2", "72", False),
        ("The answer is 72", "72", False),  # no "#### N": not stated
        ("#### 3\nwait\n#### 72", "72", True),  # the last one counts
        ("#### 72\nwait\n#### 3", "72", False),
    ],
)
def test_answers_compare_as_numbers(solution: str, gold: str, correct: bool) -> None:
    assert TASK.is_correct(solution, gold) is correct


def test_numbers_are_normalised() -> None:
    assert [normalise_number(t) for t in ("1,234", "72.0", "-0.50", "007", "-0", "1e3", "x", "nan")] == [
        "1234", "72", "-0.5", "7", "0", "1000", None, None,
    ]  # fmt: skip
    assert [final_number(t) for t in ("#### -7", "#### 1,000,000", "####12", "no answer", "#### x")] == [
        "-7", "1000000", "12", None, None,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="gold answer 'twelve' is not a number"):
        TASK.is_correct("#### 12", "twelve")


def test_answers_in_the_file_are_normalised(tmp_path: Path) -> None:
    rows = [
        {"question": f"Q{i}?", "answer": f"Work.\n#### {answer}"} for i, answer in enumerate(["1,234", "-7", "3.0"])
    ]
    task = Gsm8kTask(write(tmp_path / "rows.jsonl", rows))
    answers = {p.question: p.answer for split in SPLITS for p in task._splits[split]}
    assert answers == {"Q0?": "1234", "Q1?": "-7", "Q2?": "3"}


GOOD = {"question": "How many?", "answer": "2+1 = <<2+1=3>>3.\n#### 3"}


@pytest.mark.parametrize(
    ("lines", "line", "message"),
    [
        ([GOOD, "{not json"], 2, "not JSON"),
        ([GOOD, "", "[1, 2]"], 3, "a row must be a JSON object, got list"),  # blank lines still count
        ([{"question": "How many?"}], 1, "field 'answer' must be a non-empty string"),
        ([GOOD, GOOD, {"answer": "#### 3"}], 3, "field 'question' must be a non-empty string"),
        ([{"question": "How many?", "answer": 3}], 1, "field 'answer' must be a non-empty string"),
        ([GOOD, {"question": "How many?", "answer": "It is 3."}], 2, "answer has no '#### N' line"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path: Path, lines: list[object], line: int, message: str) -> None:
    bad = write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bad))}:{line}: {re.escape(message)}"):
        Gsm8kTask(bad)


def test_a_malformed_file_in_a_directory_names_itself(tmp_path: Path) -> None:
    write(tmp_path / "train.jsonl", [GOOD])
    bad = write(tmp_path / "test.jsonl", [GOOD, GOOD, "{"])
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bad))}:3: not JSON"):
        Gsm8kTask(tmp_path)


def test_empty_splits_and_bad_requests_are_clear_errors(tmp_path: Path) -> None:
    one = write(tmp_path / "one.jsonl", [GOOD])
    assert split_of(GOOD["question"]) == "train"
    task = Gsm8kTask(one)
    assert [p.answer for p in task.problems("train")] == ["3"]
    with pytest.raises(ValueError, match=rf"^task 'gsm8k': no test problems in {re.escape(str(one))}$"):
        task.problems("test")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        task.problems("dev")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="count must be >= 0, got -1"):
        task.problems("train", -1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"holds none of train\.jsonl, validation\.jsonl, test\.jsonl"):
        Gsm8kTask(tmp_path / "empty")
    with pytest.raises(ValueError, match="does not exist"):
        Gsm8kTask(tmp_path / "missing.jsonl")
