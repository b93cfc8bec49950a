"""Structured logging: JSON lines for collectors, rich console output for people, plain lines for files."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter
from rich.console import Console
from rich.logging import RichHandler


def configure_logging(level: str = "INFO", fmt: str = "console", service: str | None = None) -> None:
    """Route every logger to one handler on stderr; ``extra={...}`` fields become JSON keys."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if fmt == "json":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        static = {"service": service} if service else {}
        handler.setFormatter(
            JsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                static_fields=static,
            )
        )
    elif not sys.stderr.isatty():
        # A log file or a pipe (the demo's logs/, kubectl logs, a test): one line per record, never wrapped at the
        # console's width, so a message can be grepped whatever the terminal or the length of a path in it.
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s %(name)s: %(message)s", "%H:%M:%S"))
    else:
        handler = RichHandler(
            console=Console(stderr=True), show_path=False, rich_tracebacks=True, log_time_format="%H:%M:%S"
        )
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    # grpc and redis are chatty at DEBUG; keep them at WARNING unless asked otherwise.
    for noisy in ("grpc", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.WARNING))
