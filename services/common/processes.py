"""Start services and workers as local processes on loopback and wait until they are ready."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc


class LocalProcess:
    """One process (``python -m <module> <flags>``) with its log in a file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, module: str, flags: list[str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        env = os.environ | {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *flags], stdout=self._log, stderr=subprocess.STDOUT, env=env
        )

    def stop(self, grace_s: float = 15.0) -> int:
        """SIGTERM (graceful drain), SIGKILL after ``grace_s``; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return int(self.process.returncode)


class WorkerProcess(LocalProcess):
    """A queue worker: no gRPC port; ready when its Prometheus endpoint answers."""

    def __init__(self, name: str, module: str, flags: list[str], log_dir: Path, metrics_port: int) -> None:
        super().__init__(name, module, ["--metrics-port", str(metrics_port), *flags], log_dir)
        self.metrics_port = metrics_port

    async def wait_ready(self, timeout_s: float) -> float:
        """Poll http://127.0.0.1:<metrics_port>/metrics until it answers 200; returns the seconds it took."""
        started = time.perf_counter()
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
            if await asyncio.to_thread(_answers, url):
                return time.perf_counter() - started
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError(f"{self.name} not ready after {timeout_s:.0f} s; see {self.log_path}")
            await asyncio.sleep(0.2)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False  # not listening yet


class ServiceProcess(LocalProcess):
    """A gRPC service on a loopback port, ready when its health service says SERVING."""

    def __init__(self, name: str, module: str, flags: list[str], log_dir: Path, port: int) -> None:
        super().__init__(name, module, ["--host", "127.0.0.1", "--port", str(port), *flags], log_dir)
        self.port = port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def wait_serving(self, service: str, timeout_s: float) -> float:
        """Poll grpc.health.v1 Check(service) until SERVING; returns the seconds it took."""
        started = time.perf_counter()
        async with aio.insecure_channel(self.target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_path}")
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return time.perf_counter() - started
                except aio.AioRpcError:
                    pass  # not listening yet
                if time.perf_counter() - started > timeout_s:
                    raise TimeoutError(f"{self.name} not SERVING after {timeout_s:.0f} s; see {self.log_path}")
                await asyncio.sleep(0.2)
