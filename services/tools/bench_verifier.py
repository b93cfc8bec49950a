"""``legibility bench verifier``: what the verifier service costs on top of its own forward passes, and vLLM's.

On the same checkpoint and the same pairs (the load generator's toy problems, plain and jargon, some wrong):

1. raw: the checkpoint loaded as the service loads it (``load_verifier``: same encoding, same torch threads), pairs
   scored in batches of ``max_batch_size`` in this process, no gRPC — the most the model gives; with ``--engine
   vllm``, the vllm engine's scorer (AsyncLLM's pooling runner) in this process, ``max_batch_size`` rows at once;
2. the service, ``python -m services.verifier`` in a subprocess (so the clients do not share its GIL), driven by
   :func:`services.tools.loadtest_verifier.run_loadtest` over gRPC Score from 1, 8 and 64 concurrent clients with
   one item per request (RL reward calls), and 64 clients with 8 items per request;
3. vLLM's own OpenAI server with the pooling runner (``--convert classify``), ``POST /classify`` from 64 concurrent
   clients, sent our encodings twice over: as token ids (both servers score the same tokens; vLLM's skips the
   tokenising our Score does) and as text (what a user sends either server; used only where the text tokenises back
   to the same ids); its probabilities are checked against sigmoid of our scores. The bundled GPT-2 has 16-wide
   heads, which vLLM's CPU attention has no kernel for: the server loads the weak-model engine's exact zero-padding
   patch as its worker extension.

Scores per second, the ratio to raw and to vLLM's /classify at the same load side by side. Engines run one after
the other, never two on the CPU at once. Each level runs ``--duration`` seconds (or until ``--requests`` calls, when
given) after WARMUP_CALLS calls per client that are not counted: the service's and vLLM's levels start with their
connections open and their batches in their steady shape, as raw does after its warm-up batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.common.bundled_models import BUNDLED_VERIFIER
from services.common.lifetime import run_command
from services.common.ports import free_port
from services.common.processes import ServiceProcess
from services.tools.bench_progress import BenchProgress, stage
from services.tools.closed_loop import closed_loop
from services.verifier.settings import VerifierSettings

log = logging.getLogger(__name__)

DEFAULTS = VerifierSettings()
POOL_SIZE = 64
"""Distinct pairs, cycled: the load generator's pool for batch sizes up to 16."""
WARMUP_CALLS = 4
"""Calls per client before a service or /classify level is measured. Without them a level of 4,000 calls at 64 x 1
(~4 s here) counted opening 64 connections and the batches' first shapes: 0.81 of raw in one run where 12-s
steady-state loads gave 0.95-0.97."""
START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Row:
    mode: str
    clients: int
    items_per_request: int
    scores_per_s: float | None
    """None: the row was skipped (see note)."""
    failed: int = 0
    note: str = ""


@dataclass(frozen=True)
class BenchConfig:
    model: Path = BUNDLED_VERIFIER
    levels: tuple[tuple[int, int], ...] = ((1, 1), (8, 1), (64, 1), (64, 8))
    """(clients, items per request) for the service."""
    vllm_levels: tuple[tuple[int, int], ...] = ((64, 1), (64, 8))
    requests: int | None = None
    """Most requests per level (raw: 8x as many rows); None: each level runs duration_s."""
    duration_s: float = 20.0
    """Most seconds per level."""
    max_batch_size: int = DEFAULTS.max_batch_size
    max_delay_ms: float = DEFAULTS.max_delay_ms
    torch_threads: int = DEFAULTS.torch_threads
    device: str = DEFAULTS.device
    """auto, cpu or cuda: raw and the service alike (the hf engine)."""
    engine: str = "hf"
    """The service's engine, and what the raw row measures: hf (transformers forward passes) or vllm (AsyncLLM's
    pooling runner in this process, batches of max_batch_size rows submitted at once)."""
    vllm: bool = True
    hf_worker: str = DEFAULTS.hf_worker
    """The service's hf forward passes: in a thread of its process, or a child process (raw runs in this one)."""


def bench_pairs(seed: int = 0) -> list[tuple[str, str]]:
    from services.tools.loadtest_verifier import load_pairs

    return [(q, s) for q, s, _ in load_pairs(POOL_SIZE, seed)]


def measure_raw(
    config: BenchConfig, pairs: list[tuple[str, str]], total: float
) -> tuple[Row, list[float], list[list[int]]]:
    """In-process forward passes of ``max_batch_size`` pairs; also the scores and token ids of ``pairs`` (what vLLM
    is given and checked against)."""
    from services.verifier.model import load_verifier

    model = load_verifier(
        config.model,
        max_batch_size=config.max_batch_size,
        torch_threads=config.torch_threads,
        device=config.device,
        hf_worker="thread",  # raw: the forward passes in this process, nothing between them
    )
    batch = [pairs[i % len(pairs)] for i in range(config.max_batch_size)]
    reference = model.forward(pairs)  # also the warm-up
    scored, started = 0, time.perf_counter()
    while scored == 0 or (scored < total and time.perf_counter() - started < config.duration_s):
        model.forward(batch)
        scored += len(batch)
    seconds = time.perf_counter() - started
    encoded = [model.verifier_input.ids(q, s) for q, s in pairs]
    return Row("raw forward", 1, config.max_batch_size, scored / seconds), reference, encoded


def _start(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: stopped as a whole
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def _exited(process: subprocess.Popen[bytes], what: str) -> RuntimeError:
    stderr = process.stderr.read().decode(errors="replace")[-2000:] if process.stderr else ""
    return RuntimeError(f"{what} exited with {process.returncode}: {stderr}")


async def measure_service(config: BenchConfig) -> list[Row]:
    """``python -m services.verifier`` on loopback, driven by the load generator at each level."""
    from services.verifier.service import SERVICE_NAME

    flags = ["--model-path", str(config.model), "--no-metrics-enabled", "--no-http-enabled", "--drain-delay-s", "0"]
    flags += ["--log-level", "WARNING", "--max-batch-size", str(config.max_batch_size)]
    flags += ["--max-delay-ms", str(config.max_delay_ms), "--torch-threads", str(config.torch_threads)]
    flags += ["--device", config.device, "--engine", config.engine, "--hf-worker", config.hf_worker]
    flags += ["--max-queue-size", str(max(1024, 64 * 8 * 2))]
    with tempfile.TemporaryDirectory(prefix="bench-verifier-") as logs:
        service = ServiceProcess("verifier", "services.verifier", flags, Path(logs), free_port())
        try:
            with stage(f"starting the service ({config.engine} engine)"):
                await service.wait_serving(SERVICE_NAME, START_TIMEOUT_S)
            rows = []
            for clients, items in config.levels:
                with stage(f"service, {clients} x {items}"):
                    rows.append(await _service_row(service.target, config, clients, items))
            return rows
        finally:
            service.stop(grace_s=30)


async def _service_row(target: str, config: BenchConfig, clients: int, items: int) -> Row:
    from services.tools.loadtest_verifier import LoadConfig, run_loadtest

    load = LoadConfig(
        target=target,
        requests=config.requests,
        duration_s=config.duration_s,
        concurrency=clients,
        batch_size=items,
        warmup_calls=WARMUP_CALLS,
    )
    report = await run_loadtest(load)
    log.info("service %d x %d: %.0f scores/s", clients, items, report.items_per_s)
    return Row("service gRPC Score", clients, items, report.items_per_s, report.requests_failed)


CLASSIFY_IDS = "vLLM /classify ids"
CLASSIFY_TEXT = "vLLM /classify text"


def as_texts(model: Path, encoded: list[list[int]]) -> list[str] | None:
    """Our encodings as text that vLLM's tokenizer turns back into the same ids (special tokens such as the EOS
    read-out written out, no special tokens added); None when one does not round-trip."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    texts = [tokenizer.decode(ids) for ids in encoded]
    back = tokenizer(texts, add_special_tokens=False).input_ids
    return texts if all(list(b) == ids for b, ids in zip(back, encoded, strict=True)) else None


async def measure_vllm(config: BenchConfig, encoded: list[list[int]], reference: list[float]) -> list[Row]:
    """vLLM's OpenAI server, pooling runner, POST /classify of our encodings (token ids ending in the EOS read-out)
    as ids and as text; rows plus max |probs - sigmoid(our score)| in each mode's note."""
    import aiohttp
    from transformers import AutoConfig

    from services.decoding.vllm_heads import PAD_HEADS_ENV, PaddedHeadsWorkerExtension, needs_padded_heads

    port = free_port()
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(config.model)]
    command += ["--runner", "pooling", "--convert", "classify", "--dtype", "float32", "--enforce-eager"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    command += ["--max-num-seqs", str(config.max_batch_size), "--disable-uvicorn-access-log"]
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    if needs_padded_heads(AutoConfig.from_pretrained(config.model)):
        command += ["--worker-extension-cls", PaddedHeadsWorkerExtension.qualified_name()]
        env[PAD_HEADS_ENV] = "1"
    process = _start(command, env)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            with stage("starting vLLM's /classify server"):
                await _wait_healthy(session, url, process)

            async def classify(inputs: list[list[int]] | list[str]) -> list[float]:
                body = {"model": str(config.model), "input": inputs, "add_special_tokens": False}
                async with session.post(f"{url}/classify", json=body) as response:
                    response.raise_for_status()
                    return [item["probs"][0] for item in (await response.json())["data"]]

            rows = []
            texts = as_texts(config.model, encoded)
            for mode, inputs in ((CLASSIFY_IDS, encoded), (CLASSIFY_TEXT, texts)):
                if inputs is None:
                    note = "skipped (an encoding does not tokenise back from its text)"
                else:
                    probs = await classify(inputs)
                    difference = max(abs(p - 1 / (1 + math.exp(-s))) for p, s in zip(probs, reference, strict=True))
                    note = f"{mode}: max |probs - sigmoid(our score)| = {difference:.1e} over {len(inputs)} pairs"
                for clients, items in config.vllm_levels:
                    with stage(f"{mode}, {clients} x {items}"):
                        rows.append(await _classify_row(classify, inputs, mode, clients, items, config, note))
            return rows
    finally:
        _stop(process)


async def _classify_row(
    classify,
    inputs: list[list[int]] | list[str] | None,
    mode: str,
    clients: int,
    items: int,
    config: BenchConfig,
    note: str,
) -> Row:
    """One /classify level; a skipped row (no rate) where there are no inputs for ``mode``."""
    if inputs is None:
        return Row(mode, clients, items, None, note=note)
    ok, failed, seconds = await _drive(classify, inputs, clients, items, config)
    return Row(mode, clients, items, ok * items / seconds, failed, note)


async def _wait_healthy(session: Any, url: str, process: subprocess.Popen[bytes]) -> None:
    """Until vLLM's server answers GET /health with 200; raises when it exits or takes past START_TIMEOUT_S."""
    import aiohttp

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise _exited(process, "vLLM's server")
        try:
            async with session.get(f"{url}/health") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"vLLM's server did not start within {START_TIMEOUT_S:.0f} s")
        await asyncio.sleep(1.0)


async def _drive(
    classify, texts: list[list[int]] | list[str], clients: int, items: int, config: BenchConfig
) -> tuple[int, int, float]:
    """(calls ok, calls failed, seconds): ``clients`` loops of ``items`` texts per call (:func:`closed_loop`);
    each loop's first WARMUP_CALLS calls are not counted."""

    async def call(index: int) -> bool:
        try:
            await classify([texts[(index * items + k) % len(texts)] for k in range(items)])
        except Exception:
            return False
        return True

    oks, seconds = await closed_loop(
        call, clients=clients, warmup_calls=WARMUP_CALLS, requests=config.requests, duration_s=config.duration_s
    )
    return sum(oks), len(oks) - sum(oks), seconds


async def measure_raw_vllm(config: BenchConfig, encoded: list[list[int]], total: float) -> Row:
    """The vllm engine alone: AsyncLLM (pooling runner) in this process, ``max_batch_size`` rows at a time."""
    from transformers import AutoConfig, AutoTokenizer

    from services.decoding.tokens import context_window
    from services.verifier.scorers import VllmScorer

    window = context_window(AutoConfig.from_pretrained(config.model), AutoTokenizer.from_pretrained(config.model))
    scorer = await asyncio.to_thread(
        VllmScorer.start,
        config.model,
        context_window=window,
        max_num_seqs=config.max_batch_size,
        gpu_memory_utilization=DEFAULTS.vllm_gpu_memory_utilization,
    )
    try:
        batch = [encoded[i % len(encoded)] for i in range(config.max_batch_size)]
        await scorer.score(batch)  # warm-up
        scored, started = 0, time.perf_counter()
        while scored == 0 or (scored < total and time.perf_counter() - started < config.duration_s):
            await scorer.score(batch)
            scored += len(batch)
        seconds = time.perf_counter() - started
    finally:
        await scorer.close()
    return Row("raw AsyncLLM classify", 1, config.max_batch_size, scored / seconds)


def stage_count(config: BenchConfig) -> int:
    """The stages :func:`run_bench` marks: raw (twice with the vllm engine), the service's start and levels, vLLM's
    server's start and levels (ids, then text)."""
    vllm = 1 + 2 * len(config.vllm_levels) if config.vllm else 0
    return 1 + (config.engine == "vllm") + 1 + len(config.levels) + vllm


async def run_bench(config: BenchConfig) -> tuple[Row, list[Row]]:
    """Raw, then the service, then vLLM (a failure to start it becomes a skipped row)."""
    pairs = bench_pairs()
    total = math.inf if config.requests is None else config.requests * 8
    with stage("raw forward passes"):
        raw, reference, encoded = await asyncio.to_thread(measure_raw, config, pairs, total)
    if config.engine == "vllm":
        with stage("raw AsyncLLM classify"):
            raw = await measure_raw_vllm(config, encoded, total)
    rows = await measure_service(config)
    if config.vllm:
        try:
            rows += await measure_vllm(config, encoded, reference)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            rows.append(Row(CLASSIFY_IDS, 64, 1, None, note=f"skipped ({reason})"))
    return raw, rows


def to_json(config: BenchConfig, raw: Row, rows: list[Row]) -> dict[str, object]:
    """The run as JSON: the machine, the settings, every row with its ratio to raw (None where skipped)."""
    settings = {k: os.path.relpath(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()}
    measured = []
    for row in [raw, *rows]:
        ratio = None if row.scores_per_s is None or row is raw else round(row.scores_per_s / raw.scores_per_s, 3)
        measured.append({**dataclasses.asdict(row), "ratio_vs_raw": ratio})
    return {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "config": settings, "rows": measured}


def draw(raw: Row, rows: list[Row], path: Path, title: str) -> None:
    """Scores/s by concurrent clients (one line per items/request), raw and vLLM /classify as reference marks."""
    from services.tools.bench_plots import Series, draw_throughput

    series = []
    for mode, marker in (("service gRPC Score", "o"), (CLASSIFY_IDS, "s"), (CLASSIFY_TEXT, "^")):
        for items in sorted({r.items_per_request for r in rows if r.mode == mode}):
            points = [r for r in rows if r.mode == mode and r.items_per_request == items and r.scores_per_s]
            if points:
                label = f"{mode}, {items} item(s)/request"
                series.append(Series(label, [r.clients for r in points], [r.scores_per_s for r in points], marker))
    raw_rate = (raw.mode, raw.scores_per_s or 0.0)
    draw_throughput(
        path, title, raw_rate, series, xlabel="concurrent clients", ylabel="scores / s", legend="lower right"
    )


def table(raw: Row, rows: list[Row], title: str) -> Table:
    out = Table(title=title)
    columns = ("mode", "clients", "items/request", "scores/s", "ratio vs raw", "vs /classify ids", "vs text", "failed")
    for name in columns:
        out.add_column(name, justify="left" if name == "mode" else "right")
    theirs = {
        (r.mode, r.clients, r.items_per_request): r.scores_per_s for r in rows if r.mode.startswith("vLLM /classify")
    }
    notes = []
    for row in [raw, *rows]:
        if row.scores_per_s is None:
            out.add_row(row.mode, str(row.clients), str(row.items_per_request), "-", "-", "-", "-", "-")
        else:
            ratio = "" if row is raw else f"{row.scores_per_s / raw.scores_per_s:.2f}"
            versus = []
            for mode in (CLASSIFY_IDS, CLASSIFY_TEXT):
                rate = theirs.get((mode, row.clients, row.items_per_request))
                versus.append(f"{row.scores_per_s / rate:.2f}" if rate and row.mode.startswith("service") else "")
            cells = (str(row.clients), str(row.items_per_request), f"{row.scores_per_s:.0f}", ratio, *versus)
            out.add_row(row.mode, *cells, str(row.failed))
        if row.note and row.note not in notes:
            notes.append(row.note)
    out.caption = "\n".join(f"{row_note}" for row_note in notes) or None
    return out


def bench_verifier(
    model: Annotated[Path, typer.Option(help="Checkpoint directory (transformers format).")] = BUNDLED_VERIFIER,
    requests: Annotated[
        int | None, typer.Option(min=1, help="Most requests per level (raw: 8x as many pairs); default: no cap.")
    ] = None,
    duration: Annotated[float, typer.Option(min=0.1, help="Most seconds per level (a level stops after it).")] = 20.0,
    max_batch_size: Annotated[int, typer.Option(min=1, help="Pairs per forward pass (raw and service).")] = 64,
    max_delay_ms: Annotated[float, typer.Option(min=0, help="The service's batching delay.")] = DEFAULTS.max_delay_ms,
    torch_threads: Annotated[int, typer.Option(min=1, help="torch threads (raw and service).")] = 1,
    device: Annotated[str, typer.Option(help="auto (the GPU when torch sees one), cpu or cuda.")] = "auto",
    engine: Annotated[str, typer.Option(help="The service's engine (and the raw row's): hf or vllm.")] = "hf",
    hf_worker: Annotated[
        str,
        typer.Option(help="The service's hf forward passes: thread (its process), process (a child) or auto."),
    ] = DEFAULTS.hf_worker,
    vllm: Annotated[bool, typer.Option(help="Also measure vLLM's pooling server (/classify).")] = True,
    json_out: Annotated[Path | None, typer.Option(help="Write the measurements as JSON here.")] = None,
    png: Annotated[Path | None, typer.Option(help="Draw scores/s by clients, with raw and vLLM, here.")] = None,
) -> None:
    """Scores/s of raw forward passes vs the verifier service at 1, 8 and 64 clients, and vLLM's /classify."""
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # the raw row's vllm engine logs in this process
    config = BenchConfig(
        model=model,
        requests=requests,
        duration_s=duration,
        max_batch_size=max_batch_size,
        max_delay_ms=max_delay_ms,
        torch_threads=torch_threads,
        device=device,
        engine=engine,
        vllm=vllm,
        hf_worker=hf_worker,
    )
    with BenchProgress("bench verifier", stage_count(config)):
        raw, rows = run_command(run_bench(config))
    from services.verifier.model import resolve_device, resolve_hf_worker

    title = (
        f"verifier throughput: {model.name}, engine {engine}"
        + (f" ({resolve_hf_worker(hf_worker, resolve_device(device))} worker)" if engine == "hf" else "")
        + f", max_batch_size {max_batch_size}, "
        f"max_delay_ms {max_delay_ms:g}, {torch_threads} torch thread(s), {os.cpu_count()} CPUs"
    )
    Console(width=max(Console().width, 140)).print(table(raw, rows, title))
    if json_out is not None:
        json_out.write_text(json.dumps(to_json(config, raw, rows), indent=2) + "\n")
    if png is not None:
        draw(raw, rows, png, title)
