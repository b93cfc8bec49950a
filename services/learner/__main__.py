"""``legibility serve learner`` / ``python -m services.learner``: config → server → serve until a signal."""

from __future__ import annotations

import asyncio
import logging
import sys

from services.common.cpu_cores import pin_service
from services.common.logs import configure_logging
from services.learner.app import start_learner
from services.learner.settings import LearnerSettings

log = logging.getLogger("services.learner")


async def serve(settings: LearnerSettings) -> None:
    """Start (resuming unfinished runs), serve until SIGTERM/SIGINT, then stop: live runs checkpoint and pause."""
    app = await start_learner(settings)
    try:
        await app.server.run_until_signal()
    finally:
        await app.stop()


def main(args: list[str] | None = None, prog: str = "python -m services.learner") -> None:
    """Parse flags (``--help`` lists every setting) and serve."""
    settings = LearnerSettings.from_cli_or_exit(sys.argv[1:] if args is None else args, prog=prog)
    configure_logging(settings.log_level, settings.log_format, "learner")
    if not pin_service(settings.cpu_cores, log):  # before the model loads and any child process starts
        sys.exit(1)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
