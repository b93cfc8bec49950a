"""Rows of a task's local jsonl data, split like the toy world: by file per split, or by a hash of the question.

``path`` is a jsonl file (every row, each split by :func:`~services.tasks.base.split_of` of its question) or a
directory of ``<split>.jsonl`` files (GSM8K's and MATH's release layout: ``train.jsonl`` and ``test.jsonl``); a
split without its own file is taken from ``train.jsonl`` by the same hash. Nothing is downloaded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from services.tasks.base import Split, split_of

T = TypeVar("T")
RowParser = Callable[[dict[str, Any], str], T]
"""(row, "file:line") -> a problem; raises ValueError with the location in its message."""


def read_rows(path: Path, parse: RowParser[T]) -> list[T]:
    """Every row of a jsonl file, parsed; a malformed line raises ValueError naming ``file:line``."""
    problems: list[T] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: not JSON ({error})") from error
            if not isinstance(row, dict):
                raise ValueError(f"{where}: a row must be a JSON object")
            problems.append(parse(row, where))
    return problems


def split_rows(path: Path, split: Split, parse: RowParser[T], question: Callable[[T], str]) -> list[T]:
    """The problems of ``split`` under ``path`` (a file or a directory), in file order."""
    if path.is_dir():
        own = path / f"{split}.jsonl"
        if own.is_file():
            return read_rows(own, parse)
        source = path / "train.jsonl"
        if not source.is_file():
            raise ValueError(f"{path}: holds neither {split}.jsonl nor train.jsonl")
    else:
        source = path
    rows = read_rows(source, parse)
    return [row for row in rows if split_of(question(row)) == split]


def required_text(row: dict[str, Any], field: str, where: str) -> str:
    value = row.get(field)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: field {field!r} must be a non-empty string")
    return value
