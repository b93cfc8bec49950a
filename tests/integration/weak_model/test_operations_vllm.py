"""The CLI process with the vLLM engine: vLLM's engine-core and worker processes start under it, and SIGTERM
stops the server and every one of them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys

import psutil
import pytest

from services.common.client import open_channel
from services.common.genproto.legibility.v1 import common_pb2, weak_model_pb2, weak_model_pb2_grpc
from tests.integration.weak_model.conftest import WEAK_MODEL

PROMPT = "Ann has 4 bags of 7 pens. She gets 3 more. How many pens now?\n"


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_cli_serves_with_vllm_and_sigterm_leaves_no_processes_behind() -> None:
    command = [sys.executable, "-m", "services.cli", "serve", "weak-model", "--engine", "vllm"]
    flags = ["--port", "0", "--no-metrics-enabled", "--log-format", "json", "--drain-delay-s", "0"]
    env = {**os.environ, "LEGIBILITY_MODEL_PATH": str(WEAK_MODEL)}
    process = await asyncio.create_subprocess_exec(*command, *flags, env=env, stderr=asyncio.subprocess.PIPE)
    assert process.stderr is not None
    children: list[psutil.Process] = []
    try:
        port = None
        while port is None:
            line = await asyncio.wait_for(process.stderr.readline(), timeout=240)
            assert line, "the server exited before serving"
            try:
                message = json.loads(line).get("message", "")
            except ValueError:  # vLLM's own log lines are not JSON
                continue
            if found := re.search(r"\(sha256 [0-9a-f]{64}\) serving on 127\.0\.0\.1:(\d+)", message):
                port = int(found.group(1))
        children = psutil.Process(process.pid).children(recursive=True)
        assert len(children) >= 1  # vLLM's engine core (and its worker)
        channel = open_channel(f"127.0.0.1:{port}")
        stub = weak_model_pb2_grpc.WeakModelServiceStub(channel)
        item = weak_model_pb2.ContinueItem(
            prefix=common_pb2.TextOrTokens(text=PROMPT), max_new_tokens=16, boundary=weak_model_pb2.BOUNDARY_STEP
        )
        response = await stub.Continue(weak_model_pb2.ContinueRequest(items=[item, item]), timeout=30)
        assert [r.text for r in response.results] == ["4*7=28.\n"] * 2
        await channel.close()
        drain = asyncio.ensure_future(process.stderr.read())  # keep the pipe from filling while it shuts down
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=60) == 0
        await drain
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == []
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for child in children:
            if child.is_running():
                child.kill()
