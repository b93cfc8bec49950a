"""``legibility bench weak-model``: what the service costs on top of vLLM.

On the same prompts (the toy task's test problems), greedy, no boundary, a fixed ``max_new_tokens``:

1. raw: vLLM's ``AsyncLLM`` in this process, configured and called as the service calls it (the same
   ``SamplingParams``: final output only, no detokenising without stop strings): (a) ``--batch`` continuations
   submitted all at once -- the most the engine gives a batch job; (b) the same prompts from 1, 8 and 64 concurrent
   loops, one continuation each -- what vLLM itself gives at that concurrency;
2. the service (``python -m services.weak_model``, a separate process) on loopback (engine vllm; optionally also
   hf), Continue with one item per request from 1, 8 and 64 concurrent clients.

Each level measures steady state: every client first makes WARMUP_CALLS calls that are not counted, then the level
runs ``--duration`` seconds (or until ``--requests`` calls, when given). It prints generated tokens per second and
two ratios side by side: to raw all at once, and to raw at the same concurrency (the service's own cost). The
engines run one after the other (never two on the CPU at once).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.common.bundled_models import BUNDLED_WEAK
from services.common.lifetime import run_command
from services.decoding.vllm_shutdown import collect_engines, shut_down
from services.tools.bench_progress import BenchProgress, stage
from services.tools.closed_loop import closed_loop

log = logging.getLogger(__name__)

START_TIMEOUT_S = 240.0
"""A vLLM engine's first start takes ~35 s on 2 CPU cores; a service process imports and warms up too."""

RAW = "raw"
"""The ``engine`` of raw AsyncLLM rows."""

WARMUP_CALLS = 2
"""Calls per client before a level counts: without them a level opens with every client's first call at once, all
prefilled in one step, a start no steady load has."""


@dataclass(frozen=True)
class Measured:
    label: str
    requests: int
    tokens: int
    seconds: float
    engine: str = RAW
    """The service's engine, or :data:`RAW` for vLLM alone."""
    clients: int = 0
    """Concurrent callers; 0 for raw with every request submitted at once."""

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Run:
    """All rows of one bench run, with the two references every service row is compared to."""

    rows: list[Measured]

    @property
    def all_at_once(self) -> Measured:
        return next(r for r in self.rows if r.engine == RAW and r.clients == 0)

    def raw_at(self, clients: int) -> Measured | None:
        return next((r for r in self.rows if r.engine == RAW and r.clients == clients), None)

    def ratios(self, row: Measured) -> tuple[float | None, float | None]:
        """(row ÷ raw all at once, row ÷ raw at the row's concurrency); None where it is the reference itself."""
        if row.engine == RAW and row.clients == 0:
            return None, None
        top = self.all_at_once.tokens_per_s
        same = self.raw_at(row.clients) if row.engine != RAW else None
        vs_top = row.tokens_per_s / top if top else None
        vs_same = row.tokens_per_s / same.tokens_per_s if same is not None and same.tokens_per_s else None
        return vs_top, vs_same


def bench_prompts(count: int) -> list[str]:
    """The toy task's test problems' prompts (what the weak model continues in training)."""
    from services.tasks.toy import format_prompt, generate

    return [format_prompt(problem.question) for problem in generate("test", count)]


def raw_sampling_params(max_new_tokens: int) -> Any:
    """What the service sends vLLM for one Continue item without a boundary (see ``vllm_segments``)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(
        max_tokens=max_new_tokens,
        temperature=0.0,
        logprobs=0,
        output_kind=RequestOutputKind.FINAL_ONLY,
        detokenize=False,
        skip_special_tokens=False,
        spaces_between_special_tokens=False,
    )


async def measure_raw(
    model: Path,
    prompts: list[str],
    max_new_tokens: int,
    levels: list[int],
    batch_size: int,
    requests: int | None,
    duration: float,
) -> list[Measured]:
    """vLLM alone, the service's AsyncLLM configuration: all requests at once, then from each number of loops."""
    from transformers import AutoConfig, AutoTokenizer
    from vllm.inputs import tokens_input

    from services.decoding.tokens import context_window
    from services.decoding.vllm_start import start_async_llm
    from services.weak_model.engines.vllm import engine_args

    tokenizer = AutoTokenizer.from_pretrained(model)
    window = context_window(AutoConfig.from_pretrained(model), tokenizer)
    args = engine_args(model, context_window=window, seed=0, max_num_seqs=max(levels))
    with stage("starting vLLM (raw)"):
        llm = await asyncio.to_thread(start_async_llm, args)
    ids = itertools.count()
    try:
        params = raw_sampling_params(max_new_tokens)
        encoded = {p: tokenizer.encode(p) for p in prompts}

        async def one(prompt: str) -> int:
            final = None
            async for output in llm.generate(tokens_input(encoded[prompt]), params, f"b{next(ids)}"):
                final = output
            assert final is not None
            return len(final.outputs[0].token_ids) - int(final.outputs[0].finish_reason == "stop")

        batch = list(itertools.islice(itertools.cycle(prompts), batch_size))
        with stage(f"raw AsyncLLM, {len(batch)} requests at once"):
            await asyncio.gather(*(one(p) for p in prompts))  # warm-up: every prompt once, as the service gets
            started = time.perf_counter()
            counts = await asyncio.gather(*(one(p) for p in batch))
            seconds = time.perf_counter() - started
        rows = [Measured(f"raw AsyncLLM, {len(batch)} requests at once", len(batch), sum(counts), seconds)]
        for clients in levels:
            label = f"raw AsyncLLM, {_clients(clients)}"
            rows.append(await _level(label, RAW, one, prompts, clients, requests, duration))
    finally:
        await shut_down(llm)
        llm = None
        await collect_engines()
    return rows


async def measure_service(
    engine: str,
    model: Path,
    prompts: list[str],
    max_new_tokens: int,
    levels: list[int],
    requests: int | None,
    duration: float,
) -> list[Measured]:
    """The service, ``python -m services.weak_model`` in a subprocess on loopback (so the clients do not share its
    GIL, as in production), driven by Continue (one item per request) from each number of concurrent clients."""
    import tempfile

    from services.common.client import open_channel
    from services.common.genproto.legibility.v1 import common_pb2, weak_model_pb2, weak_model_pb2_grpc
    from services.common.ports import free_port
    from services.common.processes import ServiceProcess
    from services.weak_model.service import SERVICE_NAME

    flags = ["--model-path", str(model), "--engine", engine, "--no-metrics-enabled", "--drain-delay-s", "0"]
    flags += ["--log-level", "WARNING", "--max-batch-size", str(max(levels))]
    flags += ["--max-queue-size", str(max(256, max(levels))), "--max-new-tokens-cap", str(max(256, max_new_tokens))]
    logs = tempfile.TemporaryDirectory(prefix="bench-weak-model-")
    service = ServiceProcess(f"weak-model-{engine}", "services.weak_model", flags, Path(logs.name), free_port())
    try:
        with stage(f"starting the service ({engine} engine)"):
            await service.wait_serving(SERVICE_NAME, START_TIMEOUT_S)
    except BaseException:
        service.stop(grace_s=10)
        logs.cleanup()
        raise
    channel = open_channel(service.target)
    stub = weak_model_pb2_grpc.WeakModelServiceStub(channel)

    async def one(prompt: str) -> int:
        item = weak_model_pb2.ContinueItem(
            prefix=common_pb2.TextOrTokens(text=prompt), max_new_tokens=max_new_tokens, temperature=0.0
        )
        response = await stub.Continue(weak_model_pb2.ContinueRequest(items=[item]), timeout=120)
        return len(response.results[0].token_ids)

    results = []
    try:
        # Warm-up: every prompt once, so every level (and raw) finds the prompts in vLLM's prefix cache alike.
        with stage(f"warming the service up ({engine} engine)"):
            await asyncio.gather(*(one(p) for p in prompts))
        for clients in levels:
            label = f"service, engine {engine}, {_clients(clients)}"
            results.append(await _level(label, engine, one, prompts, clients, requests, duration))
    finally:
        await channel.close()
        service.stop(grace_s=30)
        logs.cleanup()
    return results


def _clients(count: int) -> str:
    return f"{count} client{'s' if count > 1 else ''}"


async def _level(
    label: str,
    engine: str,
    call: Callable[[str], Awaitable[int]],
    prompts: list[str],
    clients: int,
    requests: int | None,
    duration: float,
) -> Measured:
    """``clients`` concurrent loops over the prompts, cycled (:func:`closed_loop`, WARMUP_CALLS uncounted calls
    each, then ``duration`` seconds or ``requests`` calls)."""

    async def one(index: int) -> int:
        return await call(prompts[index % len(prompts)])

    with stage(label):
        tokens, seconds = await closed_loop(
            one, clients=clients, warmup_calls=WARMUP_CALLS, requests=requests, duration_s=duration
        )
    log.info("%s: %d requests, %d tokens in %.1f s", label, len(tokens), sum(tokens), seconds)
    return Measured(label, len(tokens), sum(tokens), seconds, engine, clients)


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def table(run: Run, title: str) -> Table:
    out = Table(title=title)
    for name in ("measured", "requests", "tokens", "seconds", "tokens/s", "÷ raw all at once", "÷ raw same clients"):
        out.add_column(name, justify="left" if name == "measured" else "right")
    for row in run.rows:
        vs_top, vs_same = run.ratios(row)
        cells = [str(row.requests), str(row.tokens), f"{row.seconds:.2f}", f"{row.tokens_per_s:.0f}"]
        out.add_row(row.label, *cells, _ratio(vs_top), _ratio(vs_same))
    return out


def to_json(run: Run, settings: dict[str, object]) -> dict[str, object]:
    """The run as JSON: the machine, the settings, every row with tokens/s and its two ratios."""
    measured = []
    for row in run.rows:
        vs_top, vs_same = run.ratios(row)
        measured.append(
            {
                **dataclasses.asdict(row),
                "tokens_per_s": row.tokens_per_s,
                "ratio_vs_raw": None if vs_top is None else round(vs_top, 3),
                "ratio_vs_raw_same_clients": None if vs_same is None else round(vs_same, 3),
            }
        )
    return {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "settings": settings, "rows": measured}


def draw(run: Run, path: Path, title: str) -> None:
    """Tokens/s by concurrent clients: raw AsyncLLM and one line per engine; raw all at once as a reference line."""
    from services.tools.bench_plots import Series, draw_throughput

    series = []
    for engine in dict.fromkeys(r.engine for r in run.rows if r.clients):
        points = [r for r in run.rows if r.engine == engine and r.clients]
        label = "raw AsyncLLM" if engine == RAW else f"service, engine {engine}"
        series.append(
            Series(label, [r.clients for r in points], [r.tokens_per_s for r in points], "s" if engine == RAW else "o")
        )
    top = run.all_at_once
    draw_throughput(
        path,
        title,
        ("raw AsyncLLM all at once", top.tokens_per_s),
        series,
        xlabel="concurrent clients (one item per Continue)",
        ylabel="tokens / s",
        legend="lower right",
    )


def stage_count(levels: list[int], hf: bool) -> int:
    """The stages :func:`run_bench` marks: raw's start, all-at-once and levels; each service's start, warm-up and
    levels."""
    return 2 + len(levels) + (1 + hf) * (2 + len(levels))


async def run_bench(
    model: Path,
    prompts: int,
    max_new_tokens: int,
    levels: list[int],
    batch_size: int,
    requests: int | None,
    duration: float,
    hf: bool,
) -> Run:
    texts = bench_prompts(prompts)
    rows = await measure_raw(model, texts, max_new_tokens, levels, batch_size, requests, duration)
    rows += await measure_service("vllm", model, texts, max_new_tokens, levels, requests, duration)
    if hf:
        rows += await measure_service("hf", model, texts, max_new_tokens, levels, requests, duration)
    return Run(rows)


def bench_weak_model(
    model: Annotated[Path, typer.Option(help="Checkpoint directory (transformers format).")] = BUNDLED_WEAK,
    prompts: Annotated[int, typer.Option(min=1, help="Distinct toy test prompts, cycled through.")] = 128,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens per continuation (greedy, EOS ends early).")] = 48,
    clients: Annotated[list[int] | None, typer.Option(help="Concurrent clients per level; repeatable.")] = None,
    batch: Annotated[int, typer.Option(min=1, help="Continuations vLLM gets all at once (the raw reference).")] = 1024,
    requests: Annotated[
        int | None, typer.Option(min=1, help="Most requests per level; default: no cap (each runs --duration).")
    ] = None,
    duration: Annotated[
        float, typer.Option(min=0.1, help="Seconds per level, after 2 uncounted calls per client.")
    ] = 20.0,
    hf: Annotated[bool, typer.Option(help="Also measure the service with the transformers engine.")] = False,
    json_out: Annotated[Path | None, typer.Option(help="Write the measurements as JSON here.")] = None,
    png: Annotated[Path | None, typer.Option(help="Draw tokens/s by clients, with the raw line, here.")] = None,
) -> None:
    """Tokens/s of vLLM alone vs the weak-model service's Continue, at 1, 8 and 64 concurrent clients each."""
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    levels = sorted(set(clients or [1, 8, 64]))
    with BenchProgress("bench weak-model", stage_count(levels, hf)):
        run = run_command(run_bench(model, prompts, max_new_tokens, levels, batch, requests, duration, hf))
    title = f"weak-model throughput: {prompts} toy test prompts, greedy, max_new_tokens {max_new_tokens}, {model.name}"
    Console(width=max(Console().width, 110)).print(table(run, title))
    if json_out is not None:
        settings = {"model": os.path.relpath(model), "prompts": prompts, "max_new_tokens": max_new_tokens}
        settings |= {"clients": levels, "batch": batch, "requests": requests, "duration_s": duration}
        settings |= {"warmup_calls_per_client": WARMUP_CALLS}
        json_out.write_text(json.dumps(to_json(run, settings), indent=2) + "\n")
    if png is not None:
        draw(run, png, title)
