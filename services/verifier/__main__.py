"""``legibility serve verifier`` / ``python -m services.verifier``: config → server → serve until a signal."""

from __future__ import annotations

import asyncio
import logging
import sys

from services.common.cpu_cores import pin_service
from services.common.errors import ArtifactError
from services.common.logs import configure_logging
from services.verifier.app import start_verifier
from services.verifier.settings import VerifierSettings

log = logging.getLogger("services.verifier")


async def serve(settings: VerifierSettings) -> None:
    """Start, serve until SIGTERM/SIGINT, stop gracefully."""
    app = await start_verifier(settings)
    try:
        await app.server.run_until_signal()
    finally:
        await app.stop()  # the registry watcher, then the (already drained) server, then the model


def main(args: list[str] | None = None, prog: str = "python -m services.verifier") -> None:
    """Parse flags (``--help`` lists every setting) and serve; exit 1 when the weights are refused."""
    settings = VerifierSettings.from_cli_or_exit(sys.argv[1:] if args is None else args, prog=prog)
    configure_logging(settings.log_level, settings.log_format, "verifier")
    if not pin_service(settings.cpu_cores, log):  # before the model loads and any child process starts
        sys.exit(1)
    try:
        asyncio.run(serve(settings))
    except ArtifactError as error:
        log.error("refusing to start: %s", error)
        sys.exit(1)


if __name__ == "__main__":
    main()
