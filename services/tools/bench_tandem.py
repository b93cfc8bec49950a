"""``legibility bench tandem``: what a tandem rollout costs next to a solo one.

The same prompts (the toy task's test problems), the same policy (in-process transformers, as the learner runs
it) and the weak-model service as a separate process on loopback (as in a cluster), sampled at T = 1 with fixed
seeds, one batch of all prompts as a training step sends it:

- solo: the policy alone, each rollout one segment to EOS or the budget;
- tandem: word handoffs at ``p_primary`` 0.5 (the demo's schedule), the weak model taking the rollouts waiting
  for it whenever it is free, the policy holding those it writes in one continuous decoding loop (``run_tandem``'s
  default; its "rounds" are that loop's steps);
- tandem, lockstep: the same rollouts in rounds of one batched policy call and one batched ``Continue`` each, every
  round waiting for both authors;
- the OpenRLHF agent path (``--agent``, needs vLLM): the policy on vLLM, each rollout one ``TandemAgent.execute``
  call as OpenRLHF's rollout actor makes it, solo and tandem (:mod:`services.tools.bench_tandem_agent`).

Per engine of the weak-model service (``hf``, and ``vllm`` when installed) it reports wall time, response tokens
per second, lockstep rounds, ``Continue`` calls, and per rollout the prefix tokens each author was sent and those it
computed (the rest came from its prefix KV cache), then the tandem ÷ solo time ratios last. ``--json-out`` and
``--png`` keep the run.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import time
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from services.common.bundled_models import BUNDLED_STRONG, BUNDLED_WEAK
from services.common.client import open_channel
from services.common.cpu_cores import available_cores, format_cores, halves, pin_to
from services.common.genproto.legibility.v1 import weak_model_pb2_grpc
from services.common.lifetime import run_command
from services.common.ports import free_port
from services.common.processes import ServiceProcess
from services.decoding.requests import SegmentRequest
from services.learner.clients.segments import ContinuousSegmentWriter, Segment, SegmentSession, SegmentWriter
from services.learner.clients.weak_model import WeakModelClient
from services.learner.rl.rollout import RolloutOptions, new_rollouts, run_tandem
from services.learner.rl.schedule import SOLO, HandoffSchedule
from services.tools.bench_progress import BenchProgress, stage
from services.tools.bench_tandem_agent import (
    AGENT,
    GPU_SHARE,
    RolloutEngine,
    agent_settings,
    run_agent_batch,
    weak_service_counters,
)

if TYPE_CHECKING:  # the policy imports torch: `legibility --help` should not wait for it
    from services.learner.rl.policy import TransformersPolicy

log = logging.getLogger(__name__)
WORD_HANDOFFS = HandoffSchedule(strategy="word", p_primary=0.5)
LOCKSTEP = "tandem, lockstep"
"""The same tandem rollouts with every round waiting for both authors (``run_tandem(overlap=False)``)."""
MODES = ("solo", LOCKSTEP, "tandem")
LEARNER = "learner"


@dataclass
class CountingWriter:
    """A segment writer that counts what it was asked: calls, requests, prefix tokens sent, tokens written."""

    inner: SegmentWriter
    calls: int = 0
    nonempty_calls: int = 0
    requests: int = 0
    prefix_tokens: int = 0
    written_tokens: int = 0

    async def write(self, requests: Sequence[SegmentRequest]) -> list[Segment]:
        self.calls += 1
        if requests:
            self.nonempty_calls += 1
        self.requests += len(requests)
        self.prefix_tokens += sum(len(r.prefix_ids) for r in requests)
        segments = await self.inner.write(requests)
        self.written_tokens += sum(len(s.token_ids) for s in segments)
        return segments


@dataclass
class CountingPolicy(CountingWriter):
    """A :class:`CountingWriter` that also counts a continuous writer's session: each step is a call."""

    inner: ContinuousSegmentWriter

    def session(self) -> SegmentSession:
        return CountingSession(self.inner.session(), self)


@dataclass
class CountingSession:
    inner: SegmentSession
    counts: CountingWriter

    @property
    def running(self) -> int:
        return self.inner.running

    async def step(
        self,
        join: Sequence[tuple[Hashable, SegmentRequest]] = (),
        resume: Sequence[tuple[Hashable, SegmentRequest]] = (),
        leave: Sequence[Hashable] = (),
        drop: Sequence[Hashable] = (),
    ) -> list[tuple[Hashable, Segment]]:
        counts = self.counts
        counts.calls += 1
        counts.nonempty_calls += 1
        counts.requests += len(join) + len(resume)
        counts.prefix_tokens += sum(len(r.prefix_ids) for _, r in [*join, *resume])
        ended = await self.inner.step(join, resume, leave, drop)
        counts.written_tokens += sum(len(s.token_ids) for _, s in ended)
        return ended


@dataclass(frozen=True)
class Measured:
    """One batch of rollouts, solo or tandem."""

    mode: str
    engine: str
    rollouts: int
    seconds: float
    response_tokens: int
    rounds: int
    """Policy calls: lockstep rounds, or the steps of the policy's continuous decoding loop."""
    continue_calls: int
    policy_prefix_tokens_per_rollout: float
    weak_prefix_tokens_per_rollout: float
    weak_tokens: int
    policy_computed_prefix_per_rollout: float
    """Prefix tokens the policy computed (not found in its prefix cache)."""
    weak_computed_prefix_per_rollout: float
    """Prefix tokens the weak-model service computed (its legibility_prefix_cache_tokens_total{source="computed"})."""
    path: str = LEARNER
    """Whose rollout loop: the learner's (policy in-process, transformers) or the OpenRLHF agent's (policy on vLLM)."""

    @property
    def tokens_per_s(self) -> float:
        return self.response_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class BenchResult:
    prompts: int
    max_new_tokens: int
    rows: list[Measured] = field(default_factory=list)
    policy_cores: str = ""
    """The CPU cores the policy ran on (this process); empty: every core, shared with the weak-model service."""
    weak_cores: str = ""
    """The weak-model service's CPU cores; empty: every core."""

    def ratio(self, engine: str, path: str = LEARNER) -> float:
        solo = next(r for r in self.rows if (r.path, r.engine, r.mode) == (path, engine, "solo"))
        tandem = next(r for r in self.rows if (r.path, r.engine, r.mode) == (path, engine, "tandem"))
        return tandem.seconds / solo.seconds

    def engines(self, path: str = LEARNER) -> list[str]:
        return list(dict.fromkeys(r.engine for r in self.rows if r.path == path))

    def groups(self) -> list[tuple[str, str]]:
        """(path, weak-model engine) in the order measured."""
        return list(dict.fromkeys((r.path, r.engine) for r in self.rows))

    def to_json(self) -> dict[str, object]:
        return {
            "prompts": self.prompts,
            "max_new_tokens": self.max_new_tokens,
            "cpu_cores": {"policy": self.policy_cores, "weak_model": self.weak_cores},
            "rows": [asdict(r) | {"tokens_per_s": r.tokens_per_s} for r in self.rows],
            "tandem_over_solo": {engine: self.ratio(engine) for engine in self.engines()},
            "agent_tandem_over_solo": {engine: self.ratio(engine, AGENT) for engine in self.engines(AGENT)},
        }


def _computed_prefix(metrics_url: str | None) -> float:
    """Prefix tokens the weak-model service computed so far (all its models), from its /metrics."""
    return 0.0 if metrics_url is None else weak_service_counters(metrics_url).computed_prefix_tokens


async def measure(
    mode: str,
    engine: str,
    policy: TransformersPolicy,
    weak: WeakModelClient,
    prompts: list[list[int]],
    tokens: int,
    metrics_url: str | None = None,
) -> Measured:
    schedule = SOLO if mode == "solo" else WORD_HANDOFFS
    options = RolloutOptions(schedule, tokens)
    rollouts = new_rollouts(prompts, options, policy.context_window, seed=0)
    author, partner = CountingPolicy(policy), CountingWriter(weak)
    policy.prefix_cache.clear()  # each batch starts as a training step's does: after an update
    stats = policy.prefix_cache.stats
    policy_computed = stats.prefix_tokens - stats.reused_tokens
    weak_computed = await asyncio.to_thread(_computed_prefix, metrics_url)
    started = time.perf_counter()
    await run_tandem(rollouts, author, partner, options, overlap=mode != LOCKSTEP)
    seconds = time.perf_counter() - started
    count = len(rollouts)
    policy_computed = stats.prefix_tokens - stats.reused_tokens - policy_computed
    weak_computed = await asyncio.to_thread(_computed_prefix, metrics_url) - weak_computed
    return Measured(
        mode,
        engine,
        count,
        seconds,
        sum(len(r.authorship) for r in rollouts),
        author.calls,
        partner.nonempty_calls,
        author.prefix_tokens / count,
        partner.prefix_tokens / count,
        partner.written_tokens,
        policy_computed / count,
        weak_computed / count,
    )


async def bench_engine(
    engine: str,
    policy: TransformersPolicy,
    prompts: list[list[int]],
    tokens: int,
    weak_model: Path,
    logs: Path,
    prefix_cache: bool = True,
    repeats: int = 3,
    agent: AgentSetup | None = None,
    weak_cores: str = "",
) -> list[Measured]:
    """Solo then tandem against a weak-model service process on ``engine`` (warmed up by one tandem batch); then
    the same through the OpenRLHF agent when ``agent`` is given. ``weak_cores``: the service's CPU cores."""
    metrics_port = free_port()
    service = ServiceProcess(
        f"weak-model-{engine}",
        "services.weak_model",
        ["--engine", engine, "--model-path", str(weak_model), "--max-batch-size", "64",
         "--metrics-port", str(metrics_port), "--drain-delay-s", "0", "--max-queue-size", "1024",
         "--vllm-gpu-memory-utilization", str(GPU_SHARE),
         *([] if prefix_cache else ["--prefix-cache-mib", "0"]), *(["--cpu-cores", weak_cores] if weak_cores else [])],
        logs,
        free_port(),
    )  # fmt: skip
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        with stage(f"starting the weak-model service ({engine} engine)"):
            await service.wait_serving("legibility.v1.WeakModelService", 300)
        channel = open_channel(service.target)
        try:
            weak = WeakModelClient(weak_model_pb2_grpc.WeakModelServiceStub(channel))
            with stage(f"weak {engine}: warm-up"):  # both authors, all paths
                await measure("tandem", engine, policy, weak, prompts[:8], tokens)
            runs: dict[str, list[Measured]] = {mode: [] for mode in MODES}
            for repeat in range(repeats):  # the modes interleaved, so a slow spell of the machine hits them all
                for mode in MODES:
                    with stage(f"weak {engine}: {mode}, batch {repeat + 1} of {repeats}"):
                        runs[mode].append(await measure(mode, engine, policy, weak, prompts, tokens, metrics_url))
            rows = [sorted(runs[mode], key=lambda r: r.seconds)[repeats // 2] for mode in MODES]  # median batches
            if agent is not None:
                rows += await measure_agent(agent, engine, service.target, metrics_url, tokens, repeats)
        finally:
            await channel.close()
    finally:
        service.stop()
    return rows


@dataclass
class AgentSetup:
    """The policy on vLLM for the agent path, and the prompts as OpenRLHF hands them to ``execute``."""

    engine: RolloutEngine
    tokenizer: Any
    policy_path: Path
    context_window: int
    prompts: list[str]
    labels: list[str]


async def measure_agent(
    setup: AgentSetup, engine: str, target: str, metrics_url: str, tokens: int, repeats: int
) -> list[Measured]:
    """Solo and tandem batches through ``TandemAgent.execute``, interleaved; the median of each."""
    schedules = {"solo": SOLO, "tandem": WORD_HANDOFFS}  # AGENT_SCHEDULES of them

    async def batch(mode: str, count: int) -> Measured:
        settings = agent_settings(target, schedules[mode], setup.policy_path)
        prompts, labels = setup.prompts[:count], setup.labels[:count]
        done = await run_agent_batch(
            setup.engine, settings, setup.tokenizer, prompts, labels, tokens, setup.context_window, metrics_url
        )
        return Measured(
            mode,
            engine,
            count,
            done.seconds,
            done.response_tokens,
            done.policy_calls,
            done.continue_calls,
            done.policy_prefix_tokens / count,
            done.weak_prefix_tokens / count,
            done.weak_tokens,
            done.policy_computed_prefix_tokens / count,
            done.weak_computed_prefix_tokens / count,
            AGENT,
        )

    with stage(f"agent path, weak {engine}: warm-up"):
        await batch("tandem", min(8, len(setup.prompts)))
    runs: dict[str, list[Measured]] = {mode: [] for mode in schedules}
    for repeat in range(repeats):
        for mode in schedules:
            with stage(f"agent path, weak {engine}: {mode}, batch {repeat + 1} of {repeats}"):
                runs[mode].append(await batch(mode, len(setup.prompts)))
    return [sorted(runs[mode], key=lambda r: r.seconds)[repeats // 2] for mode in schedules]


def table(result: BenchResult) -> Table:
    cores = f"; policy on cores {result.policy_cores}, weak model on {result.weak_cores}" if result.weak_cores else ""
    title = f"tandem vs solo rollouts: {result.prompts} prompts, up to {result.max_new_tokens} new tokens{cores}"
    out = Table(title=title)
    names = ("path", "engine", "mode", "seconds", "tokens/s", "rounds", "Continue calls", "policy prefix sent/computed",
             "weak prefix sent/computed", "weak tokens")  # fmt: skip
    for name in names:
        out.add_column(name, justify="left" if name in ("path", "engine", "mode") else "right")
    for r in result.rows:
        out.add_row(
            r.path, r.engine, r.mode, f"{r.seconds:.2f}", f"{r.tokens_per_s:.0f}", str(r.rounds), str(r.continue_calls),
            f"{r.policy_prefix_tokens_per_rollout:.0f} / {r.policy_computed_prefix_per_rollout:.0f}",
            f"{r.weak_prefix_tokens_per_rollout:.0f} / {r.weak_computed_prefix_per_rollout:.0f}", str(r.weak_tokens),
        )  # fmt: skip
    return out


def draw(result: BenchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = result.groups()
    figure, axis = plt.subplots(figsize=(3 + 1.6 * len(groups), 3.5))
    for offset, mode in zip((-0.27, 0.0, 0.27), MODES, strict=True):
        bars = [
            (i, r.seconds)
            for i, g in enumerate(groups)
            for r in result.rows
            if (r.path, r.engine, r.mode) == (*g, mode)
        ]
        axis.bar([i + offset for i, _ in bars], [s for _, s in bars], width=0.27, label=mode)
    for i, (loop, engine) in enumerate(groups):
        top = max(r.seconds for r in result.rows if (r.path, r.engine) == (loop, engine))
        axis.text(i + 0.27, top, f"×{result.ratio(engine, loop):.2f}", ha="center", va="bottom")
    labels = [f"weak: {e}" if p == LEARNER else f"{p}\nweak: {e}" for p, e in groups]
    axis.set_xticks(range(len(groups)), labels, fontsize="small")
    axis.set_ylabel("seconds per batch")
    axis.margins(y=0.35)
    axis.set_title(f"{result.prompts} rollouts, ≤ {result.max_new_tokens} tokens: tandem (word, p 0.5) vs solo")
    axis.legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


AGENT_SCHEDULES = 2
"""solo and tandem: what the agent path measures."""


def stage_count(engines: int, repeats: int, agent: bool) -> int:
    """The stages :func:`run_bench` marks: the agent path's engine start; per weak engine its service's start, a
    warm-up and ``repeats`` batches of each mode, and the agent path's warm-up and batches."""
    per_engine = 2 + repeats * len(MODES) + (1 + repeats * AGENT_SCHEDULES if agent else 0)
    return int(agent) + engines * per_engine


async def run_bench(
    engines: list[str],
    prompts: int,
    max_new_tokens: int,
    policy_path: Path,
    weak_model: Path,
    logs: Path,
    prefix_cache: bool = True,
    repeats: int = 3,
    agent: bool = False,
    weak_cores: str = "",
) -> BenchResult:
    """``weak_cores``: the weak-model service's CPU cores (empty: all, shared with this process)."""
    from services.learner.rl.policy import TransformersPolicy
    from services.tasks.toy import format_prompt, generate

    policy = TransformersPolicy.load(policy_path, torch_threads=1)
    if not prefix_cache:
        policy.prefix_cache.max_bytes = 0  # stores nothing: every segment prefills its whole prefix
    problems = generate("test", prompts)
    texts = [format_prompt(p.question) for p in problems]
    encoded = [policy.encode(text) for text in texts]
    setup = None
    if agent:
        from transformers import AutoTokenizer

        window = policy.context_window
        with stage("starting the policy's vLLM engine (agent path)"):
            rollout_engine = await asyncio.to_thread(RolloutEngine.start, policy_path, window, max(64, prompts))
        tokenizer = AutoTokenizer.from_pretrained(policy_path)
        setup = AgentSetup(rollout_engine, tokenizer, policy_path, window, texts, [str(p.answer) for p in problems])
    policy_cores = format_cores(available_cores()) if weak_cores else ""
    result = BenchResult(prompts, max_new_tokens, policy_cores=policy_cores, weak_cores=weak_cores)
    try:
        for engine in engines:
            result.rows += await bench_engine(
                engine, policy, encoded, max_new_tokens, weak_model, logs, prefix_cache, repeats, setup, weak_cores
            )
    finally:
        if setup is not None:
            await setup.engine.shutdown()
    return result


def bench_tandem(
    prompts: Annotated[int, typer.Option(min=1, help="Rollouts in the batch (toy test prompts).")] = 64,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Most response tokens per rollout.")] = 100,
    engine: Annotated[
        list[str] | None, typer.Option(help="Weak-model engines to measure (default: hf, and vllm if installed).")
    ] = None,
    policy: Annotated[Path, typer.Option(help="The policy checkpoint (in-process).")] = BUNDLED_STRONG,
    weak_model: Annotated[Path, typer.Option(help="The weak model's checkpoint (served).")] = BUNDLED_WEAK,
    json_out: Annotated[Path | None, typer.Option(help="Write the measurements as JSON here.")] = None,
    png: Annotated[Path | None, typer.Option(help="Draw seconds per batch, solo vs tandem, here.")] = None,
    logs: Annotated[Path, typer.Option(help="Where the weak-model services' logs go.")] = Path("runs/bench-logs"),
    prefix_cache: Annotated[
        bool,
        typer.Option(help="The policy's and the hf weak engine's prefix KV caches (off: every prefix recomputed)."),
    ] = True,
    repeats: Annotated[int, typer.Option(min=1, help="Batches per mode, interleaved; the median is reported.")] = 5,
    agent: Annotated[
        bool | None,
        typer.Option(help="Also the OpenRLHF agent path, the policy on vLLM (default: on when vLLM is installed)."),
    ] = None,
    split_cores: Annotated[
        bool | None,
        typer.Option(
            help="The policy on half the CPU cores, the weak-model service on the other half, as two pods "
            "(default: on with 2 or more cores)."
        ),
    ] = None,
) -> None:
    """Wall time of solo and word-handoff tandem rollouts of the same prompts; the tandem ÷ solo ratio last."""
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # the agent path's policy engine logs in this process
    has_vllm = importlib.util.find_spec("vllm") is not None
    engines = engine or ["hf", *(["vllm"] if has_vllm else [])]
    if agent and not has_vllm:
        raise typer.BadParameter("the agent path runs the policy on vLLM, which is not installed", param_hint="--agent")
    for name in engines:
        if name not in ("hf", "vllm"):
            raise typer.BadParameter("must be hf or vllm", param_hint="--engine")
    with_agent = has_vllm if agent is None else agent
    cores = available_cores()
    weak_cores: frozenset[int] = frozenset()
    if len(cores) >= 2 if split_cores is None else split_cores:
        try:
            policy_cores, weak_cores = halves(cores)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="--split-cores") from None
        pin_to(policy_cores)  # before the agent path's vLLM engine starts here: its processes inherit the cores
    try:
        with BenchProgress("bench tandem", stage_count(len(engines), repeats, with_agent)):
            result = run_command(
                run_bench(
                    engines, prompts, max_new_tokens, policy, weak_model, logs, prefix_cache, repeats, with_agent,
                    format_cores(weak_cores),
                )
            )  # fmt: skip
    finally:
        if weak_cores:
            pin_to(cores)
    console = Console(width=max(Console().width, 130))
    console.print(table(result))
    if json_out is not None:
        json_out.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    if png is not None:
        draw(result, png)
    for path, name in result.groups():
        console.print(f"tandem ÷ solo, {path} path, weak model on {name}: {result.ratio(name, path):.2f}")
