"""Tasks by name: the three names, each over its data, and an error that says what is wrong for each bad request."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.tasks.base import Task
from services.tasks.catalog import TASK_NAMES, load_task
from services.tasks.gsm8k import Gsm8kTask
from services.tasks.math_task import MathTask
from services.tasks.settings import TaskSettings
from services.tasks.toy_task import ToyTask

DATA = Path(__file__).resolve().parents[2] / "data"


def test_each_name_loads_its_task() -> None:
    assert TASK_NAMES == ("toy", "gsm8k", "math")
    toy, gsm8k, math = (
        load_task("toy"),
        load_task("gsm8k", DATA / "gsm8k_sample.jsonl"),
        load_task("math", str(DATA / "math_sample.jsonl")),
    )
    assert (type(toy), type(gsm8k), type(math)) == (ToyTask, Gsm8kTask, MathTask)
    assert [t.name for t in (toy, gsm8k, math)] == list(TASK_NAMES)
    assert all(isinstance(t, Task) for t in (toy, gsm8k, math))
    assert len(load_task("gsm8k", DATA / "gsm8k_dir").problems("test")) == 4
    assert load_task("toy", None).problems("test", 3) == ToyTask().problems("test", 3)


def test_bad_requests_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^unknown task 'nope'; choose one of toy, gsm8k, math$"):
        load_task("nope")
    for name in ("gsm8k", "math"):
        with pytest.raises(ValueError, match=rf"^task '{name}' needs a data file or directory \(--data PATH\)$"):
            load_task(name)
        with pytest.raises(ValueError, match=rf"^task '{name}': data {re.escape(str(tmp_path / 'no.jsonl'))} does not"):
            load_task(name, tmp_path / "no.jsonl")
    with pytest.raises(ValueError, match=r"^task 'toy' generates its problems and takes no data file$"):
        load_task("toy", DATA / "gsm8k_sample.jsonl")


def test_a_malformed_file_fails_at_load_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q2", "answer": "no final line"}\n')
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bad))}:2: answer has no '#### N' line$"):
        load_task("gsm8k", bad)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bad))}:1: field 'problem'"):
        load_task("math", bad)  # a GSM8K file is no MATH file


def test_settings_name_a_task_and_its_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEGIBILITY_TASK", "gsm8k")
    monkeypatch.setenv("LEGIBILITY_DATA", str(DATA / "gsm8k_sample.jsonl"))
    settings = TaskSettings()
    assert (settings.task, settings.chat_template) == ("gsm8k", "auto")
    assert settings.load_task().problems("test")[0].answer == "14"
    assert not settings.prompt_format(None).uses_chat
    with pytest.raises(ValidationError, match="unknown task 'nope'"):
        TaskSettings(task="nope")
    with pytest.raises(ValidationError, match="chat_template"):
        TaskSettings(chat_template="always")  # type: ignore[arg-type]
