"""``legibility serve weak-model --engine vllm --model-path <Llama checkpoint> --port 0`` as a process: it reaches
SERVING on its gRPC health check and answers Continue with the checkpoint's own greedy tokens and fingerprint."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.client import open_channel
from services.common.genproto.legibility.v1 import weak_model_pb2, weak_model_pb2_grpc
from services.decoding.boundaries import StopRule
from services.decoding.tokens import tokenizer_sha256
from services.weak_model.service import SERVICE_NAME
from tests.integration.weak_model.own_checkpoints import TEXTS, Reference, continue_item

LEGIBILITY = Path(sys.executable).with_name("legibility")


async def _port_from_log(stderr: asyncio.StreamReader, lines: list[str]) -> int:
    """The port the server bound (logged before the model loads); every line read is kept in ``lines``."""
    while True:
        line = (await stderr.readline()).decode(errors="replace")
        assert line, "the server exited before binding its port:\n" + "".join(lines[-30:])
        lines.append(line)
        try:
            message = json.loads(line).get("message", "")
        except ValueError:  # vLLM's own log lines are not JSON
            continue
        if found := re.search(r"weak_model serving gRPC on 127\.0\.0\.1:(\d+)", message):
            return int(found.group(1))


async def _drain(stderr: asyncio.StreamReader, lines: list[str]) -> None:
    """Keep reading the log so the pipe never fills while vLLM logs."""
    while line := await stderr.readline():
        lines.append(line.decode(errors="replace"))


@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_cli_serves_a_llama_checkpoint_with_vllm(own_checkpoint: Callable[[str, str], Path]) -> None:
    llama = own_checkpoint("llama", "causal")
    reference = Reference.load(llama)
    assert LEGIBILITY.exists()
    command = [str(LEGIBILITY), "serve", "weak-model", "--engine", "vllm", "--model-path", str(llama), "--port", "0"]
    flags = ["--host", "127.0.0.1", "--no-metrics-enabled", "--log-format", "json", "--drain-delay-s", "0"]
    process = await asyncio.create_subprocess_exec(*command, *flags, stderr=asyncio.subprocess.PIPE)
    assert process.stderr is not None
    lines: list[str] = []
    try:
        port = await asyncio.wait_for(_port_from_log(process.stderr, lines), timeout=120)
        drain = asyncio.ensure_future(_drain(process.stderr, lines))
        channel = open_channel(f"127.0.0.1:{port}")
        health = health_pb2_grpc.HealthStub(channel)
        status = None
        for _ in range(1500):  # polls 0.2 s apart: up to 300 s for vLLM to start on a busy machine
            reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5)
            status = reply.status
            if status == health_pb2.HealthCheckResponse.SERVING:
                break
            assert process.returncode is None, "".join(lines[-30:])
            await asyncio.sleep(0.2)
        assert status == health_pb2.HealthCheckResponse.SERVING, "".join(lines[-30:])
        stub = weak_model_pb2_grpc.WeakModelServiceStub(channel)
        request = weak_model_pb2.ContinueRequest(items=[continue_item(TEXTS[0], StopRule(12))])
        response = await stub.Continue(request, timeout=60)
        want, _ = reference.greedy([reference.prefix_ids(TEXTS[0])], 12)[0]
        result = response.results[0]
        assert list(result.token_ids) == want[: len(result.token_ids)] and len(result.token_ids) >= 1
        assert result.prefix_tokens == len(reference.tokenizer.encode(TEXTS[0]))  # BOS included
        assert response.model.tokenizer_sha256 == tokenizer_sha256(reference.tokenizer)
        assert response.model.uri == str(llama.resolve())
        await channel.close()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=60) == 0
        await drain
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
