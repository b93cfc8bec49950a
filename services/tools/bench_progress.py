"""What a bench is doing now, on one progress line: its stage, the stages done of all, the time so far.

A bench runs for minutes (engines start, levels run their full duration) and has nothing to print until its table.
The line goes to stderr and vanishes when the bench ends, so stdout holds the table alone; off a terminal rich
draws nothing. Code deep in a bench marks its stages with :func:`stage`, which finds the bench's progress through
a context variable (asyncio tasks and ``asyncio.to_thread`` inherit it) and does nothing when none is running.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar, Token
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

log = logging.getLogger(__name__)

_current: ContextVar[BenchProgress | None] = ContextVar("bench_progress", default=None)


class BenchProgress:
    """A bench's progress over ``total`` stages; ``done`` lists the stages finished, in order."""

    def __init__(self, title: str, total: int, console: Console | None = None) -> None:
        self.title = title
        self.total = total
        self.done: list[str] = []
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn(f"[bold]{title}[/bold]: {{task.description}}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
            transient=True,
        )
        self._task = self._progress.add_task("starting", total=total)
        self._token: Token[BenchProgress | None] | None = None

    def __enter__(self) -> BenchProgress:
        self._token = _current.set(self)
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._progress.stop()
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        if kind is None and len(self.done) != self.total:  # the bench's stage count no longer matches what it runs
            log.warning("%s: %d stages ran, %d were counted", self.title, len(self.done), self.total)

    def begin(self, description: str) -> None:
        self._progress.update(self._task, description=description)

    def finish(self, description: str) -> None:
        self.done.append(description)
        self._progress.advance(self._task)


@contextlib.contextmanager
def stage(description: str) -> Iterator[None]:
    """Show ``description`` while the block runs and count it done when it returns (not when it raises)."""
    progress = _current.get()
    if progress is None:
        yield
        return
    progress.begin(description)
    yield
    progress.finish(description)
