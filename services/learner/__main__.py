"""``legibility serve learner`` / ``python -m services.learner``: config → server → serve until a signal."""

from __future__ import annotations

import asyncio
import logging
import sys

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
    settings = LearnerSettings.from_cli(sys.argv[1:] if args is None else args, prog=prog)
    configure_logging(settings.log_level, settings.log_format, "learner")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
