"""The CLI process with the vLLM engine: vLLM's engine-core and worker processes start under it, and SIGTERM
stops the server and every one of them."""

from __future__ import annotations

import asyncio
import os

import psutil
import pytest

from services.common.client import open_channel
from services.common.cpu_cores import available_cores
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
        core = max(available_cores())  # the last core: vLLM's own choice would be the first
        flags = ("--engine", "vllm", "--cpu-cores", str(core))
        async with cli_server("weak-model", *flags, env=env, start_timeout_s=240) as server:
            children = psutil.Process(server.process.pid).children(recursive=True)
            assert len(children) >= 1  # vLLM's engine core (and its worker)
            # Every process of the service runs on the given core, vLLM's worker (bound by vLLM itself) too.
            for process in [psutil.Process(server.process.pid), *children]:
                assert process.cpu_affinity() == [core], process.name()
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


def engine_core(server_pid: int) -> psutil.Process:
    """vLLM's engine-core process under the server (vLLM names it ``VLLM::EngineCore``)."""
    children = psutil.Process(server_pid).children(recursive=True)
    cores = [c for c in children if "EngineCore" in c.name() or "EngineCore" in " ".join(c.cmdline())]
    assert len(cores) == 1, [(c.pid, c.name()) for c in children]
    return cores[0]


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_cli_exits_with_status_3_when_the_engine_dies_and_restarts_are_used_up() -> None:
    env = {**os.environ, "LEGIBILITY_MODEL_PATH": str(WEAK_MODEL)}
    async with cli_server(
        "weak-model", "--engine", "vllm", "--engine-max-restarts", "0", env=env, start_timeout_s=240
    ) as server:
        assert server.process.stderr is not None
        logs = asyncio.ensure_future(server.process.stderr.read())  # the pipe must not fill while it shuts down
        core = engine_core(server.process.pid)
        core.kill()
        # No restart allowed: the service stops itself, for the orchestrator to restart the pod.
        assert await asyncio.wait_for(server.process.wait(), timeout=60) == 3
        assert b"vLLM engine died" in await logs and b"restarts are off" in await logs


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_sigkilled_service_leaves_no_vllm_process_behind() -> None:
    """vLLM's engine core watches no parent (vllm-project/vllm#55510): without the service's reaper, its engine core
    and worker were still running 30 s after ``kill -9`` of the service."""
    env = {**os.environ, "LEGIBILITY_MODEL_PATH": str(WEAK_MODEL)}
    children: list[psutil.Process] = []
    try:
        async with cli_server("weak-model", "--engine", "vllm", env=env, start_timeout_s=240) as server:
            assert server.process.stderr is not None
            logs = asyncio.ensure_future(server.process.stderr.read())
            children = psutil.Process(server.process.pid).children(recursive=True)
            core = engine_core(server.process.pid)
            engine = [c for c in children if c.pid == core.pid or core.pid in {p.pid for p in c.parents()}]
            assert len(engine) >= 2, [(c.pid, c.name()) for c in children]  # the engine core and its worker
            server.process.kill()
            # The engine's processes and the reaper (psutil polls them: they are not this process's children).
            _, alive = await asyncio.to_thread(psutil.wait_procs, children, 60)
            assert [(p.pid, p.name()) for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
            await asyncio.wait_for(server.process.wait(), 30)  # its stderr ends with the last process holding it
            assert f"reaper: process {server.process.pid} ended; stopped".encode() in await logs
    finally:
        for child in children:
            if child.is_running():
                child.kill()
