"""``legibility worker train-verifier`` / ``python -m services.jobs.verifier_training.worker_main``."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from services.common.logs import configure_logging
from services.common.metrics import start_metrics_server
from services.jobs.verifier_training.worker import Worker
from services.jobs.verifier_training.worker_settings import WorkerSettings

log = logging.getLogger("services.jobs.verifier_training.worker")


async def serve(settings: WorkerSettings) -> None:
    """Run one worker until SIGTERM or SIGINT; a request in training is finished (or left to be taken over)."""
    metrics = start_metrics_server(settings.metrics_host, settings.metrics_port)
    client = settings.redis_client()
    worker = Worker(settings, client)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stopping.set)
    try:
        await worker.run()
    finally:
        await client.aclose()
        metrics.stop()
        log.info("worker %s stopped", settings.consumer)


def main(args: list[str] | None = None, prog: str = "python -m services.jobs.verifier_training.worker_main") -> None:
    settings = WorkerSettings.from_cli_or_exit(sys.argv[1:] if args is None else args, prog=prog)
    configure_logging(settings.log_level, settings.log_format, "worker")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
