"""``legibility train-verifier`` / ``python -m services.jobs.verifier_training``: flags and env → job → report."""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.table import Table

from services.common.errors import DomainError
from services.common.logs import configure_logging
from services.jobs.verifier_training.job import train_verifier_job
from services.jobs.verifier_training.settings import TrainVerifierSettings

log = logging.getLogger("services.jobs.verifier_training")


def main(args: list[str] | None = None, prog: str = "python -m services.jobs.verifier_training") -> None:
    """Parse flags (``--help`` lists every setting), train, print the held-out metrics; exit 1 on refused input."""
    settings = TrainVerifierSettings.from_cli_or_exit(sys.argv[1:] if args is None else args, prog=prog)
    configure_logging(settings.log_level, settings.log_format, "train-verifier")
    console = Console(stderr=True)
    try:
        trained = train_verifier_job(settings, console)
    except (DomainError, ValueError) as error:
        log.error("training refused: %s", error)
        sys.exit(1)
    table = Table(title=f"verifier trained → {trained.checkpoint}")
    table.add_column("held-out metric")
    table.add_column("value", justify="right")
    for key, value in trained.metrics.items():
        table.add_row(key, f"{value:.4g}")
    console.print(table)
    if trained.record is not None:
        console.print(f"published {trained.record.name} v{trained.record.version} at {trained.record.uri}")


if __name__ == "__main__":
    main()
