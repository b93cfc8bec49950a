"""``legibility loadtest verifier``: a bounded load generator against any verifier, over gRPC Score or HTTP /get_reward.

``--concurrency`` workers share a request budget (``--requests``) and a clock (``--duration``), whichever ends first,
after ``--warmup`` calls each that are not counted (connections open, the service's batches in their steady shape).
Payloads are toy test problems with plain or jargon solutions, half of them carrying a mistake, drawn from ``--seed``.
Every call is recorded, failures by status code, never raised; the report gives throughput, latency percentiles
over successful calls and the model versions seen. With ``--publish-checkpoint`` a checkpoint is published as the
next registry version mid-run, and the report says how long the first response from it took to arrive under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from services.tasks.styles import render
from services.tasks.toy import format_prompt, generate, with_mistake

UNKNOWN = "unknown"
"""The version recorded when a response does not say which version answered it."""

Version = int | str


@dataclass(frozen=True)
class LoadConfig:
    """One load run; exactly one of ``target`` (gRPC host:port) and ``http_url`` (POST /get_reward)."""

    target: str | None = None
    http_url: str | None = None
    token: str | None = None
    duration_s: float | None = None
    requests: int | None = None
    concurrency: int = 8
    batch_size: int = 1
    deadline_s: float = 10.0
    min_version: int = 0
    seed: int = 0
    publish_checkpoint: Path | None = None
    publish_after_s: float = 5.0
    redis_url: str = "redis://127.0.0.1:6379/0"
    artifact_root: Path = Path("runs/artifacts")
    model_name: str = "verifier"
    warmup_calls: int = 0
    """Calls per worker before the clock and the budget start; their results and failures are not counted."""
    progress: bool = False
    """Show a rich progress bar (the CLI does; tests do not)."""

    def __post_init__(self) -> None:
        if (self.target is None) == (self.http_url is None):
            raise ValueError(
                "give exactly one of --target (gRPC host:port) and --http-url (http://host:port/get_reward)"
            )
        if self.duration_s is None and self.requests is None:
            raise ValueError("the run is unbounded: set --duration and/or --requests")
        if self.duration_s is not None and not self.duration_s > 0:
            raise ValueError(f"--duration must be > 0 seconds, got {self.duration_s}")
        if self.requests is not None and self.requests < 1:
            raise ValueError(f"--requests must be >= 1, got {self.requests}")
        for option, value in (("--concurrency", self.concurrency), ("--batch-size", self.batch_size)):
            if value < 1:
                raise ValueError(f"{option} must be >= 1, got {value}")
        if self.warmup_calls < 0:
            raise ValueError(f"--warmup must be >= 0 calls per worker, got {self.warmup_calls}")
        if not self.deadline_s > 0:
            raise ValueError(f"--deadline must be > 0 seconds, got {self.deadline_s}")
        if self.min_version < 0:
            raise ValueError(f"--min-version must be >= 0, got {self.min_version}")
        if self.publish_checkpoint is not None:
            if self.publish_after_s < 0:
                raise ValueError(f"--publish-after must be >= 0 seconds, got {self.publish_after_s}")
            if self.duration_s is not None and self.publish_after_s >= self.duration_s:
                raise ValueError(
                    f"--publish-after {self.publish_after_s} s is not within --duration {self.duration_s} s"
                )


@dataclass
class SwapReport:
    """The mid-run publish: seconds are counted from the start of the run."""

    version: int | None = None
    published_at_s: float | None = None
    """When the version record was in the registry (the artifact copy done)."""
    first_seen_at_s: float | None = None
    """When the first response from that version arrived."""
    failures_after_publish: int = 0
    """Failed calls that ended after the publish began."""
    error: str | None = None

    @property
    def latency_s(self) -> float | None:
        """Publish to first response from the new version, under load."""
        if self.published_at_s is None or self.first_seen_at_s is None:
            return None
        return self.first_seen_at_s - self.published_at_s


@dataclass(frozen=True)
class Response:
    """One successful call: sent and received (seconds from start), the version that answered, the items scored."""

    sent_s: float
    received_s: float
    version: Version
    items: int


@dataclass
class LoadReport:
    endpoint: str
    requests_ok: int
    requests_failed: int
    items_scored: int
    duration_s: float
    latency_ms: dict[str, float]
    """p50, p95, p99 over successful calls (0 when there were none)."""
    errors: dict[str, int]
    """Failed calls by gRPC status code name, ``HTTP_<status>`` or the client's exception name."""
    versions: dict[Version, int]
    first_seen_s: dict[Version, float]
    swap: SwapReport | None = None
    responses: list[Response] = field(default_factory=list, repr=False)
    """Every successful call in the order received (not written to JSON)."""

    @property
    def requests_per_s(self) -> float:
        return self.requests_ok / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def items_per_s(self) -> float:
        return self.items_scored / self.duration_s if self.duration_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["responses"]
        out |= {"requests_per_s": self.requests_per_s, "items_per_s": self.items_per_s}
        out["versions"] = {str(k): v for k, v in self.versions.items()}
        out["first_seen_s"] = {str(k): v for k, v in self.first_seen_s.items()}
        if self.swap is not None:
            out["swap"]["latency_s"] = self.swap.latency_s
        return out


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def load_pairs(count: int, seed: int) -> list[tuple[str, str, int]]:
    """(problem, solution, answer) for toy test problems: plain or jargon, about half with a mistake."""
    rng = random.Random(f"loadtest-{seed}")
    pairs = []
    for problem in generate("test", count, seed=seed):
        solved = with_mistake(problem, rng) if rng.random() < 0.5 else problem
        pairs.append((problem.question, render(solved, rng.choice(["plain", "jargon"])), problem.answer))
    return pairs


class _Caller:
    """Sends one request of ``batch`` pairs; returns (items, version) or raises, with ``code`` naming the failure."""

    async def __aenter__(self) -> _Caller:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        pass

    async def call(self, batch: list[tuple[str, str, int]]) -> tuple[int, Version]:
        raise NotImplementedError

    @staticmethod
    def code(exc: BaseException) -> str:
        return type(exc).__name__


class _GrpcCaller(_Caller):
    def __init__(self, config: LoadConfig) -> None:
        from services.common.client import open_channel
        from services.common.genproto.legibility.v1 import verifier_pb2, verifier_pb2_grpc

        assert config.target is not None
        self._pb2 = verifier_pb2
        # No client retries: the load test reports every status as the server answered it (a retried
        # RESOURCE_EXHAUSTED would hide the overload it is there to measure); round_robin still spreads the calls.
        self._channel = open_channel(config.target, token=config.token, retry=None)
        self._stub = verifier_pb2_grpc.VerifierServiceStub(self._channel)
        self._config = config

    async def close(self) -> None:
        await self._channel.close()

    async def call(self, batch: list[tuple[str, str, int]]) -> tuple[int, Version]:
        items = [self._pb2.ScoreItem(problem=q, solution=s) for q, s, _ in batch]
        request = self._pb2.ScoreRequest(items=items, min_version=self._config.min_version)
        response = await self._stub.Score(request, timeout=self._config.deadline_s)
        return len(response.results), int(response.model.version)

    @staticmethod
    def code(exc: BaseException) -> str:
        from grpc import aio

        return exc.code().name if isinstance(exc, aio.AioRpcError) else type(exc).__name__


class _HttpFailure(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class _HttpCaller(_Caller):
    def __init__(self, config: LoadConfig) -> None:
        import aiohttp

        assert config.http_url is not None
        self._url = config.http_url
        headers = {"authorization": f"Bearer {config.token}"} if config.token else None
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=config.deadline_s),
            connector=aiohttp.TCPConnector(limit=config.concurrency),
            headers=headers,
        )

    async def close(self) -> None:
        await self._session.close()

    async def call(self, batch: list[tuple[str, str, int]]) -> tuple[int, Version]:
        prompts = [format_prompt(q) for q, _, _ in batch]
        body = {
            "query": [p + s for p, (_, s, _) in zip(prompts, batch, strict=True)],
            "prompts": prompts,
            "labels": [str(answer) for _, _, answer in batch],
        }
        async with self._session.post(self._url, json=body) as response:
            if response.status != 200:
                raise _HttpFailure(response.status)
            reply = await response.json()
        versions = reply.get("extra_logs", {}).get("verifier_version") or [None]
        version = UNKNOWN if versions[0] is None else int(versions[0])
        return len(reply["rewards"]), version

    @staticmethod
    def code(exc: BaseException) -> str:
        if isinstance(exc, _HttpFailure):
            return f"HTTP_{exc.status}"
        return "TIMEOUT" if isinstance(exc, TimeoutError) else type(exc).__name__


async def _publish(config: LoadConfig, swap: SwapReport, started: float) -> None:
    from services.common.artifacts import ArtifactStore
    from services.common.publish import publish_checkpoint
    from services.common.registry import VersionRegistry, connect

    assert config.publish_checkpoint is not None
    await asyncio.sleep(config.publish_after_s)
    client = connect(config.redis_url)
    try:
        store = ArtifactStore(config.artifact_root)
        record = await publish_checkpoint(VersionRegistry(client), store, config.model_name, config.publish_checkpoint)
        swap.version, swap.published_at_s = record.version, time.perf_counter() - started
    except Exception as exc:  # a failed publish is reported, the load goes on
        swap.error = f"{type(exc).__name__}: {exc}"
    finally:
        await client.aclose()


async def run_loadtest(config: LoadConfig) -> LoadReport:
    """Drive the endpoint until ``config.requests`` calls were sent or ``config.duration_s`` passed."""
    pool = load_pairs(max(64, 4 * config.batch_size), config.seed)
    caller: _Caller = _GrpcCaller(config) if config.target is not None else _HttpCaller(config)
    responses: list[Response] = []
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    failures_at: list[float] = []
    sent = 0
    swap = SwapReport() if config.publish_checkpoint is not None else None
    started = time.perf_counter()
    end = started + config.duration_s if config.duration_s is not None else math.inf

    async def worker() -> None:
        nonlocal sent
        while (config.requests is None or sent < config.requests) and time.perf_counter() < end:
            index, sent = sent, sent + 1
            batch = _batch(pool, index, config.batch_size)
            begin = time.perf_counter()
            try:
                items, version = await caller.call(batch)
            except Exception as exc:  # every failure is counted by code, none stops the run
                errors[caller.code(exc)] += 1
                failures_at.append(time.perf_counter() - started)
                continue
            now = time.perf_counter()
            latencies.append((now - begin) * 1000)
            responses.append(Response(begin - started, now - started, version, items))

    async with caller:
        if config.warmup_calls:
            await _warm_up(caller, pool, config)
            started = time.perf_counter()
            end = started + config.duration_s if config.duration_s is not None else math.inf
        publisher = asyncio.create_task(_publish(config, swap, started)) if swap is not None else None
        workers = asyncio.gather(*(worker() for _ in range(config.concurrency)))
        try:
            if config.progress:
                await _with_progress(workers, config, started, lambda: sent)
            else:
                await workers
        finally:
            if publisher is not None:
                if not publisher.done():
                    publisher.cancel()
                await asyncio.gather(publisher, return_exceptions=True)
    duration = time.perf_counter() - started
    return _report(config, responses, latencies, errors, failures_at, duration, swap)


def _batch(pool: list[tuple[str, str, int]], index: int, size: int) -> list[tuple[str, str, int]]:
    """Request ``index``'s items: the next ``size`` of the pool, cycled."""
    return [pool[(index * size + k) % len(pool)] for k in range(size)]


async def _warm_up(caller: _Caller, pool: list[tuple[str, str, int]], config: LoadConfig) -> None:
    """``config.warmup_calls`` calls from each of ``config.concurrency`` workers; results and failures dropped."""

    async def worker(first: int) -> None:
        for index in range(first, first + config.warmup_calls):
            with contextlib.suppress(Exception):  # the measured run counts failures; a warm-up only warms
                await caller.call(_batch(pool, index, config.batch_size))

    await asyncio.gather(*(worker(w * config.warmup_calls) for w in range(config.concurrency)))


async def _with_progress(workers: Any, config: LoadConfig, started: float, sent: Any) -> None:
    by_time = config.requests is None
    total = config.duration_s if by_time else config.requests
    columns = [TextColumn("[bold]load"), BarColumn(), TextColumn("{task.description}"), TimeElapsedColumn()]
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("", total=total)
        while not workers.done():
            done = time.perf_counter() - started if by_time else sent()
            progress.update(task, completed=min(done, total), description=f"{sent()} requests")
            await asyncio.wait([workers], timeout=0.2)
    await workers


def _report(
    config: LoadConfig,
    responses: list[Response],
    latencies: list[float],
    errors: Counter[str],
    failures_at: list[float],
    duration: float,
    swap: SwapReport | None,
) -> LoadReport:
    responses.sort(key=lambda r: r.received_s)
    versions: Counter[Version] = Counter(r.version for r in responses)
    first_seen: dict[Version, float] = {}
    for response in responses:
        first_seen.setdefault(response.version, response.received_s)
    if swap is not None and swap.version is not None:
        swap.first_seen_at_s = first_seen.get(swap.version)
    if swap is not None:
        swap.failures_after_publish = sum(1 for t in failures_at if t >= config.publish_after_s)
    ordered = sorted(latencies)
    return LoadReport(
        endpoint=config.target or config.http_url or "",
        requests_ok=len(responses),
        requests_failed=sum(errors.values()),
        items_scored=sum(r.items for r in responses),
        duration_s=duration,
        latency_ms={f"p{p}": percentile(ordered, p) for p in (50, 95, 99)},
        errors=dict(errors),
        versions=dict(sorted(versions.items(), key=lambda kv: str(kv[0]))),
        first_seen_s=first_seen,
        swap=swap,
        responses=responses,
    )


def report_table(report: LoadReport) -> Table:
    """The report as a two-column rich Table."""
    out = Table(title=f"verifier load: {report.endpoint}")
    out.add_column("measure")
    out.add_column("value", justify="right")
    rows = [
        ("requests ok / failed", f"{report.requests_ok} / {report.requests_failed}"),
        ("items scored", str(report.items_scored)),
        ("duration", f"{report.duration_s:.2f} s"),
        ("throughput", f"{report.requests_per_s:.1f} requests/s, {report.items_per_s:.1f} items/s"),
        ("latency p50 / p95 / p99", " / ".join(f"{v:.1f}" for v in report.latency_ms.values()) + " ms"),
    ]
    rows += [(f"errors {code}", str(count)) for code, count in sorted(report.errors.items())]
    rows += [
        (f"version {version}", f"{count} responses, first at {report.first_seen_s[version]:.2f} s")
        for version, count in report.versions.items()
    ]
    if (swap := report.swap) is not None:
        if swap.error is not None:
            rows.append(("publish", f"failed: {swap.error}"))
        elif swap.version is None:
            rows.append(("publish", "not done before the run ended"))
        else:
            seen = "never seen" if swap.latency_s is None else f"first response {swap.latency_s:.2f} s later"
            rows.append(("publish", f"version {swap.version} at {swap.published_at_s:.2f} s, {seen}"))
        rows.append(("failures after publish", str(swap.failures_after_publish)))
    for name, value in rows:
        out.add_row(name, value)
    return out


def loadtest_verifier(
    target: Annotated[str | None, typer.Option(help="gRPC host:port of a verifier.")] = None,
    http_url: Annotated[
        str | None, typer.Option(help="Drive the OpenRLHF route instead: http://host:port/get_reward.")
    ] = None,
    token: Annotated[str | None, typer.Option(help="Bearer token sent with every call.")] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    requests: Annotated[int | None, typer.Option(help="Stop after this many requests.")] = None,
    concurrency: Annotated[int, typer.Option(help="Concurrent workers, each one call at a time.")] = 8,
    batch_size: Annotated[int, typer.Option(help="Items (problem, solution) per request.")] = 1,
    deadline: Annotated[float, typer.Option(help="Seconds each call may take (gRPC deadline, HTTP timeout).")] = 10.0,
    min_version: Annotated[int, typer.Option(help="ScoreRequest.min_version (gRPC only); 0: any.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the toy problems, styles and mistakes.")] = 0,
    publish_checkpoint: Annotated[
        Path | None, typer.Option(help="Publish this checkpoint as the next registry version mid-run.")
    ] = None,
    publish_after: Annotated[float, typer.Option(help="Seconds into the run to publish.")] = 5.0,
    redis_url: Annotated[
        str, typer.Option(help="Registry Redis (for --publish-checkpoint).")
    ] = "redis://127.0.0.1:6379/0",
    artifact_root: Annotated[Path, typer.Option(help="Artifact store root (for --publish-checkpoint).")] = Path(
        "runs/artifacts"
    ),
    model_name: Annotated[str, typer.Option(help="Registry name to publish under.")] = "verifier",
    warmup: Annotated[int, typer.Option(help="Calls per worker before measuring (not counted).")] = 0,
    json_out: Annotated[Path | None, typer.Option(help="Also write the report here as JSON.")] = None,
) -> None:
    """Bounded load on a verifier (gRPC Score or HTTP /get_reward): throughput, latency, errors, versions seen."""
    try:
        config = LoadConfig(
            target=target,
            http_url=http_url,
            token=token,
            duration_s=duration,
            requests=requests,
            concurrency=concurrency,
            batch_size=batch_size,
            deadline_s=deadline,
            min_version=min_version,
            seed=seed,
            publish_checkpoint=publish_checkpoint,
            publish_after_s=publish_after,
            redis_url=redis_url,
            artifact_root=artifact_root,
            model_name=model_name,
            warmup_calls=warmup,
            progress=True,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    report = asyncio.run(run_loadtest(config))
    Console().print(report_table(report))
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_json(), indent=2) + "\n")
