"""A service started as a user starts it (``python -m services.cli serve ...``), found by its "serving on" log line."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

SERVING = re.compile(r"serving on 127\.0\.0\.1:(\d+)")
COMMON_FLAGS = ("--port", "0", "--no-metrics-enabled", "--log-format", "json", "--drain-delay-s", "0")


@dataclass
class CliServer:
    process: asyncio.subprocess.Process
    port: int
    announcement: str
    """The log message that said it serves (logged once the weights are loaded and health is SERVING)."""

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def terminate(self, timeout_s: float = 30) -> int:
        """SIGTERM, as an orchestrator stops a pod; the exit code (reading stderr so the pipe never fills)."""
        assert self.process.stderr is not None
        drain = asyncio.ensure_future(self.process.stderr.read())
        self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), timeout=timeout_s)
        await drain
        return code


@asynccontextmanager
async def cli_server(
    service: str, *flags: str, env: Mapping[str, str] | None = None, start_timeout_s: float = 90
) -> AsyncIterator[CliServer]:
    """``legibility serve SERVICE`` on a free port with JSON logs; killed on exit if the test did not stop it."""
    command = [sys.executable, "-m", "services.cli", "serve", service, *COMMON_FLAGS, *flags]
    process = await asyncio.create_subprocess_exec(*command, env=env, stderr=asyncio.subprocess.PIPE)
    assert process.stderr is not None
    try:
        while True:
            line = await asyncio.wait_for(process.stderr.readline(), timeout=start_timeout_s)
            assert line, "the server exited before serving"
            try:
                message = str(json.loads(line).get("message", ""))
            except ValueError:  # vLLM's own log lines are not JSON
                continue
            if found := SERVING.search(message):
                break
        yield CliServer(process, int(found.group(1)), message)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
