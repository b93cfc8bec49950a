"""Tasks over local jsonl data, split like the toy world: by file per split, or by a hash of the question.

``path`` is a jsonl file (every row, each put in the split :func:`~services.tasks.base.split_of` gives its
question) or a directory of ``<split>.jsonl`` files. GSM8K's and MATH's releases ship ``train.jsonl`` and
``test.jsonl`` only: a split without its own file is taken from ``train.jsonl`` by the same hash (and those rows
leave train), so the three splits never share a row. Nothing is downloaded. The whole data is read and checked
when the task is made, so a malformed file fails at start-up with ``file:line``, not in the middle of a run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from services.tasks.base import SPLITS, Problem, Split, TextTask, split_of


def required_text(row: dict[str, Any], field: str, where: str) -> str:
    """``row[field]`` when it is a non-empty string; else ValueError naming ``where`` and the field."""
    value = row.get(field)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: field {field!r} must be a non-empty string")
    return value


def read_rows(path: Path) -> Iterator[tuple[dict[str, Any], str]]:
    """(row, ``"file:line"``) for each non-blank line; a line that is no JSON object raises ValueError there."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: not JSON ({error.msg})") from error
            if not isinstance(row, dict):
                raise ValueError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
            yield row, where


class JsonlTask(TextTask):
    """A task whose problems come from local jsonl data; subclasses turn one row into a :class:`Problem`."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._splits = self._load()

    def problem_from_row(self, row: dict[str, Any], where: str) -> Problem:
        """One row as a problem; raises ValueError starting with ``where`` (``file:line``) when it is malformed."""
        raise NotImplementedError

    def _read(self, path: Path) -> list[Problem]:
        return [self.problem_from_row(row, where) for row, where in read_rows(path)]

    def _load(self) -> dict[Split, list[Problem]]:
        splits: dict[Split, list[Problem]] = {split: [] for split in SPLITS}
        if self.path.is_file():
            for problem in self._read(self.path):
                splits[split_of(problem.question)].append(problem)
            return splits
        if not self.path.is_dir():
            raise ValueError(f"task {self.name!r}: data {self.path} does not exist")
        files = {split: self.path / f"{split}.jsonl" for split in SPLITS if (self.path / f"{split}.jsonl").is_file()}
        if not files:
            raise ValueError(f"task {self.name!r}: {self.path} holds none of train.jsonl, validation.jsonl, test.jsonl")
        for split, file in files.items():
            for problem in self._read(file):
                hashed = split_of(problem.question)
                # train.jsonl lends a row to a split that has no file of its own, so no two splits share it.
                splits[hashed if split == "train" and hashed not in files else split].append(problem)
        return splits

    def problems(self, split: Split, count: int | None = None, seed: int = 0) -> list[Problem]:
        """The first ``count`` problems of ``split`` in file order (all when None); ``seed`` is unused, as the order
        is the file's and callers draw from the list themselves. Raises ValueError when the split is empty."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if count is not None and count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        problems = self._splits[split]
        if not problems:
            raise ValueError(f"task {self.name!r}: no {split} problems in {self.path}")
        return list(problems if count is None else problems[:count])
