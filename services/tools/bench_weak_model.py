"""``legibility bench weak-model``: what the service costs on top of vLLM.

On the same prompts (the toy task's test problems), greedy, no boundary, a fixed ``max_new_tokens``:

1. raw: vLLM's ``AsyncLLM`` in this process, configured as the service configures it, as many continuations as
   one service level sends, all submitted at once — the most the engine gives;
2. the service (``python -m services.weak_model``, a separate process) on loopback (engine vllm; optionally also
   hf), Continue with one item per request from 1, 8 and 64
   concurrent clients, each level bounded by a request count and a duration.

It prints generated tokens per second and the ratio service / raw side by side. The engines run one after the
other (never two on the CPU at once), and the run is bounded: ``--requests`` and ``--duration`` per level.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.common.bundled_models import BUNDLED_WEAK

log = logging.getLogger(__name__)

START_TIMEOUT_S = 240.0
"""A vLLM engine's first start takes ~35 s on 2 CPU cores; a service process imports and warms up too."""


@dataclass(frozen=True)
class Measured:
    label: str
    requests: int
    tokens: int
    seconds: float
    engine: str = ""
    """The service's engine; "" for the raw run."""
    clients: int = 0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def bench_prompts(count: int) -> list[str]:
    """The toy task's test problems' prompts (what the weak model continues in training)."""
    from services.tasks.toy import format_prompt, generate

    return [format_prompt(problem.question) for problem in generate("test", count)]


async def measure_raw(model: Path, prompts: list[str], max_new_tokens: int, max_batch_size: int) -> Measured:
    """vLLM alone: the service's AsyncLLM configuration, all prompts submitted concurrently."""
    from transformers import AutoConfig, AutoTokenizer
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from services.decoding.tokens import context_window
    from services.weak_model.engines.vllm import engine_args, start_async_llm

    tokenizer = AutoTokenizer.from_pretrained(model)
    window = context_window(AutoConfig.from_pretrained(model), tokenizer)
    args = engine_args(model, context_window=window, seed=0, max_num_seqs=max_batch_size)
    llm = await asyncio.to_thread(start_async_llm, args)
    try:
        params = SamplingParams(max_tokens=max_new_tokens, temperature=0.0, logprobs=0)
        encoded = [tokenizer.encode(p) for p in prompts]

        async def one(index: int, ids: list[int]) -> int:
            final = None
            async for output in llm.generate(TokensPrompt(prompt_token_ids=ids), params, f"bench-{index}"):
                final = output
            assert final is not None
            return len(final.outputs[0].token_ids) - int(final.outputs[0].finish_reason == "stop")

        await one(-1, encoded[0])  # warm-up
        started = time.perf_counter()
        counts = await asyncio.gather(*(one(i, ids) for i, ids in enumerate(encoded)))
        seconds = time.perf_counter() - started
    finally:
        llm.shutdown()
        llm = None
        gc.collect()  # AsyncLLM.__del__ shuts down again: let it run now, not at interpreter exit
    return Measured(f"raw AsyncLLM, {len(prompts)} requests at once", len(prompts), sum(counts), seconds)


async def measure_service(
    engine: str, model: Path, prompts: list[str], max_new_tokens: int, levels: list[int], requests: int, duration: float
) -> list[Measured]:
    """The service, ``python -m services.weak_model`` in a subprocess on loopback (so the clients do not share its
    GIL, as in production), driven by Continue (one item per request) from each number of concurrent clients."""
    import tempfile

    from services.common.client import open_channel
    from services.common.genproto.legibility.v1 import common_pb2, weak_model_pb2, weak_model_pb2_grpc
    from services.common.processes import ServiceProcess, free_port
    from services.weak_model.service import SERVICE_NAME

    flags = ["--model-path", str(model), "--engine", engine, "--no-metrics-enabled", "--drain-delay-s", "0"]
    flags += ["--log-level", "WARNING", "--max-batch-size", str(max(levels))]
    flags += ["--max-queue-size", str(max(256, max(levels))), "--max-new-tokens-cap", str(max(256, max_new_tokens))]
    logs = tempfile.TemporaryDirectory(prefix="bench-weak-model-")
    service = ServiceProcess(f"weak-model-{engine}", "services.weak_model", flags, Path(logs.name), free_port())
    try:
        await service.wait_serving(SERVICE_NAME, START_TIMEOUT_S)
    except BaseException:
        service.stop(grace_s=10)
        logs.cleanup()
        raise
    channel = open_channel(service.target)
    stub = weak_model_pb2_grpc.WeakModelServiceStub(channel)

    def request(prompt: str) -> Any:
        item = weak_model_pb2.ContinueItem(
            prefix=common_pb2.TextOrTokens(text=prompt), max_new_tokens=max_new_tokens, temperature=0.0
        )
        return weak_model_pb2.ContinueRequest(items=[item])

    results = []
    try:
        await stub.Continue(request(prompts[0]), timeout=120)  # warm-up
        for clients in levels:
            started = time.perf_counter()
            done, tokens = await _drive(stub, request, prompts, clients, max(requests, clients), started + duration)
            seconds = time.perf_counter() - started
            label = f"service, engine {engine}, {clients} client{'s' if clients > 1 else ''}"
            results.append(Measured(label, done, tokens, seconds, engine, clients))
            log.info("%s: %d requests, %d tokens in %.1f s", label, done, tokens, seconds)
    finally:
        await channel.close()
        service.stop(grace_s=30)
        logs.cleanup()
    return results


async def _drive(
    stub: Any, request: Any, prompts: list[str], clients: int, requests: int, deadline: float
) -> tuple[int, int]:
    """``clients`` concurrent loops share ``requests`` Continue calls; each stops once past ``deadline``."""
    feed = itertools.islice(itertools.cycle(prompts), requests)  # shared: a prompt goes to whichever client is free
    done = [0, 0]  # requests, tokens

    async def client() -> None:
        for prompt in feed:
            response = await stub.Continue(request(prompt), timeout=120)
            done[0] += 1
            done[1] += len(response.results[0].token_ids)
            if time.perf_counter() > deadline:
                return

    await asyncio.gather(*(client() for _ in range(clients)))
    return done[0], done[1]


def table(raw: Measured, rows: list[Measured], title: str) -> Table:
    out = Table(title=title)
    for name in ("measured", "requests", "tokens", "seconds", "tokens/s", "service / raw"):
        out.add_column(name, justify="left" if name == "measured" else "right")
    for row in [raw, *rows]:
        ratio = "" if row is raw else f"{row.tokens_per_s / raw.tokens_per_s:.2f}" if raw.tokens_per_s else "-"
        out.add_row(
            row.label, str(row.requests), str(row.tokens), f"{row.seconds:.2f}", f"{row.tokens_per_s:.0f}", ratio
        )
    return out


def to_json(raw: Measured, rows: list[Measured], settings: dict[str, object]) -> dict[str, object]:
    """The run as JSON: the machine, the settings, every row with tokens/s and its ratio to raw."""
    measured = []
    for row in [raw, *rows]:
        ratio = None if row is raw or not raw.tokens_per_s else round(row.tokens_per_s / raw.tokens_per_s, 3)
        measured.append({**dataclasses.asdict(row), "tokens_per_s": row.tokens_per_s, "ratio_vs_raw": ratio})
    return {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "settings": settings, "rows": measured}


def draw(raw: Measured, rows: list[Measured], path: Path, title: str) -> None:
    """Tokens/s by concurrent clients, one line per engine, raw AsyncLLM as a reference line."""
    from services.tools.bench_plots import Series, draw_throughput

    series = []
    for engine in dict.fromkeys(r.engine for r in rows):
        points = [r for r in rows if r.engine == engine]
        series.append(
            Series(f"service, engine {engine}", [r.clients for r in points], [r.tokens_per_s for r in points])
        )
    draw_throughput(
        path,
        title,
        ("raw AsyncLLM", raw.tokens_per_s),
        series,
        xlabel="concurrent clients (one item per Continue)",
        ylabel="tokens / s",
        legend="upper left",
    )


async def run_bench(
    model: Path, prompts: int, max_new_tokens: int, levels: list[int], requests: int, duration: float, hf: bool
) -> tuple[Measured, list[Measured]]:
    texts = bench_prompts(prompts)
    # The raw run submits at once as many continuations as each service level sends: the same tokens to generate.
    batch = list(itertools.islice(itertools.cycle(texts), max(requests, max(levels))))
    raw = await measure_raw(model, batch, max_new_tokens, max(levels))
    rows = await measure_service("vllm", model, texts, max_new_tokens, levels, requests, duration)
    if hf:
        rows += await measure_service("hf", model, texts, max_new_tokens, levels, requests, duration)
    return raw, rows


def bench_weak_model(
    model: Annotated[Path, typer.Option(help="Checkpoint directory (transformers format).")] = BUNDLED_WEAK,
    prompts: Annotated[int, typer.Option(min=1, help="Distinct toy test prompts, cycled through.")] = 128,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens per continuation (greedy, EOS ends early).")] = 48,
    clients: Annotated[list[int] | None, typer.Option(help="Concurrent clients per level; repeatable.")] = None,
    requests: Annotated[int, typer.Option(min=1, help="Requests per level (the raw run: as many at once).")] = 256,
    duration: Annotated[float, typer.Option(min=0.1, help="Most seconds per level (a level stops after it).")] = 30.0,
    hf: Annotated[bool, typer.Option(help="Also measure the service with the transformers engine.")] = False,
    json_out: Annotated[Path | None, typer.Option(help="Write the measurements as JSON here.")] = None,
    png: Annotated[Path | None, typer.Option(help="Draw tokens/s by clients, with the raw line, here.")] = None,
) -> None:
    """Tokens/s of vLLM alone vs the weak-model service's Continue at 1, 8 and 64 concurrent clients."""
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    levels = sorted(set(clients or [1, 8, 64]))
    raw, rows = asyncio.run(run_bench(model, prompts, max_new_tokens, levels, requests, duration, hf))
    title = f"weak-model throughput: {prompts} toy test prompts, greedy, max_new_tokens {max_new_tokens}, {model.name}"
    Console(width=max(Console().width, 110)).print(table(raw, rows, title))
    if json_out is not None:
        settings = {"model": os.path.relpath(model), "prompts": prompts, "max_new_tokens": max_new_tokens}
        settings |= {"clients": levels, "requests": requests, "duration_s": duration}
        json_out.write_text(json.dumps(to_json(raw, rows, settings), indent=2) + "\n")
    if png is not None:
        draw(raw, rows, png, title)
