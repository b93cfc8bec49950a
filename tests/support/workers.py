"""Retraining workers (`legibility worker train-verifier`) as real processes for tests."""

from __future__ import annotations

from pathlib import Path

from services.common.ports import free_port
from services.common.processes import WorkerProcess


class Workers:
    """Worker processes of one test, all stopped (SIGKILL if need be) at its end."""

    def __init__(self, redis_url: str, root: Path, stream: str) -> None:
        self.redis_url, self.root, self.stream = redis_url, root, stream
        self.started: list[WorkerProcess] = []

    async def start(self, name: str, artifact_root: Path, *flags: str) -> WorkerProcess:
        worker = WorkerProcess(
            name,
            "services.jobs.verifier_training.worker_main",
            ["--redis-url", self.redis_url, "--artifact-root", str(artifact_root), "--retrain-stream", self.stream,
             "--consumer", name, "--work-dir", str(self.root / name), "--torch-threads", "1", *flags],
            self.root / "logs",
            free_port(),
        )  # fmt: skip
        self.started.append(worker)
        await worker.wait_ready(120)
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop(grace_s=5)
