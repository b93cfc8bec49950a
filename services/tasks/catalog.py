"""Tasks by name: ``toy`` (generated, the embedded default), ``gsm8k`` and ``math`` (from local jsonl data)."""

from __future__ import annotations

from pathlib import Path

from services.tasks.base import Task

TASK_NAMES = ("toy", "gsm8k", "math")


def load_task(name: str, data: Path | str | None = None) -> Task:
    """The task ``name`` over ``data`` (a jsonl file or a directory of ``<split>.jsonl``); nothing is downloaded.

    Raises ValueError for an unknown name, a missing or superfluous data path, or a malformed file (``file:line``).
    """
    path = Path(data) if data else None
    if name == "toy":
        if path is not None:
            raise ValueError("task 'toy' generates its problems and takes no data file")
        from services.tasks.toy_task import ToyTask

        return ToyTask()
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASK_NAMES)}")
    if path is None:
        raise ValueError(f"task {name!r} needs a data file or directory (--data PATH)")
    if not path.exists():
        raise ValueError(f"task {name!r}: data {path} does not exist")
    if name == "gsm8k":
        from services.tasks.gsm8k import Gsm8kTask

        return Gsm8kTask(path)
    from services.tasks.math_task import MathTask

    return MathTask(path)
