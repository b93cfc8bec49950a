"""``legibility serve weak-model`` / ``python -m services.weak_model``: config → server → serve until a signal."""

from __future__ import annotations

import asyncio
import logging
import sys

from services.common.cpu_cores import pin_service
from services.common.errors import ArtifactError
from services.common.logs import configure_logging
from services.weak_model.app import start_weak_model
from services.weak_model.settings import WeakModelSettings

log = logging.getLogger("services.weak_model")


class EngineFailed(RuntimeError):
    """The engine died and could not be restarted: exit non-zero so the orchestrator restarts the process."""


async def serve(settings: WeakModelSettings) -> None:
    """Start, serve until SIGTERM/SIGINT (or the engine gives up), stop gracefully."""
    app = await start_weak_model(settings)
    try:
        await app.server.run_until_signal()
    finally:
        await app.engine.close()
    if app.failure is not None:
        raise EngineFailed(app.failure)


def main(args: list[str] | None = None, prog: str = "python -m services.weak_model") -> None:
    """Parse flags (``--help`` lists every setting) and serve; exit 1 when the weights are refused."""
    settings = WeakModelSettings.from_cli_or_exit(sys.argv[1:] if args is None else args, prog=prog)
    configure_logging(settings.log_level, settings.log_format, "weak_model")
    if not pin_service(settings.cpu_cores, log):  # before the engine starts its processes: they inherit the cores
        sys.exit(1)
    try:
        asyncio.run(serve(settings))
    except (ArtifactError, NotImplementedError) as error:
        log.error("refusing to start: %s", error)
        sys.exit(1)
    except EngineFailed as error:
        log.error("stopped: %s", error)
        sys.exit(3)


if __name__ == "__main__":
    main()
