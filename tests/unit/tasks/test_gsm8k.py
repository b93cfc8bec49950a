"""Loading GSM8K jsonl from a local file, with the same checker and jargon detector as the toy task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.tasks.answers import is_correct
from services.tasks.gsm8k import load_gsm8k
from services.tasks.jargon import is_jargon

ROWS = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "Natalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72",
    },
    {"question": "A big one?", "answer": "It is 1,000+234 = 1,234.\n#### 1,234"},
]


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    return path


def test_load_and_check(tmp_path: Path) -> None:
    problems = load_gsm8k(write_jsonl(tmp_path / "test.jsonl", ROWS))
    assert [p.answer for p in problems] == [72, 1234]
    assert is_jargon(problems[0].solution) and not is_jargon(problems[0].plain_solution)
    assert problems[0].plain_solution.startswith("Natalia sold 48/2 = 24 clips")
    assert is_correct(problems[0].solution, 72) and is_correct(problems[1].solution, 1234)
    assert len(load_gsm8k(tmp_path / "test.jsonl", limit=1)) == 1


def test_malformed_rows_name_their_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({"question": "q"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        load_gsm8k(bad)
    no_answer = write_jsonl(tmp_path / "noanswer.jsonl", [{"question": "q", "answer": "42"}])
    with pytest.raises(ValueError, match=r"noanswer.jsonl:1: answer has no '#### N'"):
        load_gsm8k(no_answer)
