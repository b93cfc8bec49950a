"""Settings of ``legibility worker train-verifier``: flags or ``LEGIBILITY_*`` env (it runs as a Deployment)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field

from services.common.settings import LoggingSettings, StoreSettings
from services.jobs.verifier_training.queue import DEFAULT_STREAM


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerSettings(StoreSettings, LoggingSettings):
    """Train verifiers for the requests on the retraining stream, one at a time; run as many workers as you like."""

    retrain_stream: str = DEFAULT_STREAM
    """Redis Stream of retraining requests (the learner's ``retrain_stream``); the dead letters go to ``<it>:dead``."""
    consumer: str = Field(default_factory=_default_consumer)
    """This worker's name in the consumer group (default host-pid: a restarted worker is a new consumer)."""
    claim_idle_s: float = Field(60.0, gt=0)
    """A request pending this long without a heartbeat from its worker (dead, or failed) is taken over by another
    worker; a live worker renews its claim every third of this."""
    max_attempts: int = Field(3, ge=1)
    """Deliveries of one request (failures and dead workers both count) before it goes to the dead-letter stream."""
    work_dir: Path = Path("runs/worker")
    """Where a request's checkpoint is written before it is stored (removed once published)."""
    torch_threads: int = Field(2, ge=1)
    """torch intra-op threads for training."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where training runs: ``auto`` is the GPU when torch sees one (the gpu overlay gives the worker one)."""
    block_s: float = Field(1.0, gt=0, le=4)
    """How long one XREADGROUP waits for a new request (below the client's 5 s socket timeout)."""
    metrics_host: str = "127.0.0.1"
    """Address of the Prometheus /metrics endpoint; 0.0.0.0 in a container."""
    metrics_port: int = Field(9094, ge=0, le=65535)
    """Prometheus /metrics port; 0 picks a free one."""
