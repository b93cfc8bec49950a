"""The CLI process with the vLLM engine: vLLM's engine-core and worker processes start under it, and SIGTERM
stops the server and every one of them."""

from __future__ import annotations

import os

import psutil
import pytest

from services.common.client import open_channel
from services.common.genproto.legibility.v1 import common_pb2, weak_model_pb2, weak_model_pb2_grpc
from tests.integration.weak_model.conftest import WEAK_MODEL
from tests.support.cli_server import cli_server

PROMPT = "Ann has 4 bags of 7 pens. She gets 3 more. How many pens now?\n"


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_cli_serves_with_vllm_and_sigterm_leaves_no_processes_behind() -> None:
    env = {**os.environ, "LEGIBILITY_MODEL_PATH": str(WEAK_MODEL)}
    children: list[psutil.Process] = []
    try:
        async with cli_server("weak-model", "--engine", "vllm", env=env, start_timeout_s=240) as server:
            children = psutil.Process(server.process.pid).children(recursive=True)
            assert len(children) >= 1  # vLLM's engine core (and its worker)
            channel = open_channel(server.target)
            stub = weak_model_pb2_grpc.WeakModelServiceStub(channel)
            item = weak_model_pb2.ContinueItem(
                prefix=common_pb2.TextOrTokens(text=PROMPT), max_new_tokens=16, boundary=weak_model_pb2.BOUNDARY_STEP
            )
            response = await stub.Continue(weak_model_pb2.ContinueRequest(items=[item, item]), timeout=30)
            assert [r.text for r in response.results] == ["4*7=28.\n"] * 2
            await channel.close()
            assert await server.terminate(timeout_s=60) == 0
            _, alive = psutil.wait_procs(children, timeout=10)
            assert alive == []
    finally:
        for child in children:
            if child.is_running():
                child.kill()
