"""`legibility demo`: the whole system on one machine, as a newcomer first runs it.

A real local Redis; the weak-model, verifier and learner services as processes on loopback (the bundled toy
models); the bundled verifier published as version 1. The learner then runs a tandem phase (the strong model
learns to write so that the weak model can take over) and two prover–verifier rounds (the verifier retrained and
hot-swapped each round), streaming progress; at the end the run's report (Markdown, JSON, plots) is written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.common.artifacts import ArtifactStore
from services.common.bundled_models import BUNDLED_STRONG, BUNDLED_VERIFIER, BUNDLED_WEAK
from services.common.client import open_channel
from services.common.genproto.legibility.v1 import learner_pb2, learner_pb2_grpc
from services.common.ports import free_port
from services.common.processes import LocalProcess, ServiceProcess, WorkerProcess
from services.common.publish import publish_checkpoint
from services.common.redis_launcher import EmbeddedRedis
from services.common.registry import VersionRegistry, connect
from services.common.run_watch import watch_run
from services.learner.runs.report import format_duration
from services.tasks.prompts import ChatTemplateMode
from services.tools.run_report import copy_report

console = Console()
LEARNER_SERVICE = learner_pb2.DESCRIPTOR.services_by_name["LearnerService"].full_name
_SHOWN = ("solo_accuracy", "handoff_accuracy", "jargon_rate", "legibility_ce", "sneaky_fool_rate", "verifier_auc")


@dataclass(frozen=True)
class DemoModels:
    """What the demo runs on: the bundled toy world by default, or your own task data and checkpoints."""

    task: str = "toy"
    data: Path | None = None
    chat_template: ChatTemplateMode = "auto"
    policy: Path = BUNDLED_STRONG
    """Causal LM the learner trains (it must share the weak model's tokenizer)."""
    weak: Path = BUNDLED_WEAK
    """Causal LM the weak-model service serves; also the body each round's retrained verifier starts from."""
    verifier: Path = BUNDLED_VERIFIER
    """Sequence-classification checkpoint published as the verifier's version 1."""


@dataclass(frozen=True)
class DemoPlan:
    config: learner_pb2.RunConfig
    verifier_train_steps: int
    round_sample_problems: int
    models: DemoModels = DemoModels()
    round_verifier_start: str = "warm"
    base_samples: Path | None = None
    retrain: str = "in_process"
    """in_process: the learner retrains each round's verifier; queue: a separate worker process does."""


_CHAT = {"auto": learner_pb2.CHAT_TEMPLATE_AUTO, "none": learner_pb2.CHAT_TEMPLATE_NONE}


@dataclass(frozen=True)
class DemoGame:
    """The game part of the demo: rounds, the game's learning rate, the sneaky-only attack's budget."""

    rounds: int = 2
    learning_rate: float | None = 1e-4
    """The prover's rate in the game (None: the tandem phase's 3e-5): measured to let the sneaky role learn to err
    within 10 steps a round while the helpful role keeps most of its accuracy (3e-4 halved it)."""
    attack_steps: int | None = None
    """None: 8 (1 with --quick)."""
    kl_coef: float | None = None
    """KL penalty to the initial policy in game steps (None: none, as in the tandem phase)."""
    attack_learning_rate: float | None = 3e-4
    """A stronger attacker than the prover, so an 8-step budget can exploit a weak verifier (None: the game's)."""
    round_verifier_start: str = "warm"
    verifier_steps: int | None = None
    """Retraining steps per round (None: 300, 40 with --quick)."""
    round_problems: int | None = None
    """Verifier-half problems the prover solves per round, 2 helpful + 2 sneaky each (None: 128, 24 with --quick)."""
    retrain: str = "in_process"
    """in_process: the learner retrains each round's verifier itself; queue: through the Redis Streams queue and a
    separate ``legibility worker train-verifier`` process, as in a cluster."""
    base_samples: int = 500
    """Toy problems whose weak and strong solutions (2 each) join every round's verifier data as its base, like the
    bundled verifier's own training data (a tenth with --quick); 0: none. Toy task only (own data: the learner
    setting)."""


BASE_SAMPLES_FILE = "verifier_base_samples.jsonl"


def write_base_samples(root: Path, models: DemoModels, problems: int, seed: int = 0) -> Path | None:
    """Sample the base data of the round verifiers from the weak and strong models (toy task only)."""
    if models.task != "toy" or problems <= 0:
        return None
    from services.common.samples import write_jsonl
    from services.tasks import toy
    from services.tasks.toy_models.round_samples import sample_from_models

    drawn = toy.generate("train", problems, seed)
    with console.status(f"sampling the round verifiers' base data: {problems} problems × 2 solutions × 2 models"):
        samples = sample_from_models({"weak": models.weak, "strong": models.policy}, drawn, 2, seed)
    path = root / BASE_SAMPLES_FILE
    write_jsonl(path, samples)
    correct = sum(s.correct for s in samples) / len(samples)
    console.print(f"round verifiers' base data: {len(samples)} samples, {correct:.1%} correct ({path.name})")
    return path


def demo_plan(
    quick: bool, models: DemoModels | None = None, game: DemoGame | None = None, tandem_steps: int | None = None
) -> DemoPlan:
    """The run the demo asks for: full (≈6 min on 2 cores) or quick (about a minute, for tests)."""
    game = game or DemoGame()
    steps = tandem_steps if tandem_steps is not None else 4 if quick else 100
    config = learner_pb2.RunConfig(
        name="demo" + (" (quick)" if quick else ""),
        mode=learner_pb2.RUN_MODE_TANDEM_GAME if steps else learner_pb2.RUN_MODE_GAME,
        steps=steps,
        seed=0,
        handoff=learner_pb2.HandoffSchedule(strategy=learner_pb2.HANDOFF_STRATEGY_WORD, p_primary=0.5),
        optimizer=learner_pb2.PolicyOptimizer(
            learning_rate=3e-5, group_size=8, problems_per_step=4 if quick else 8, max_new_tokens=100
        ),
        game=learner_pb2.GameConfig(
            reward=learner_pb2.GAME_REWARD_SRC,
            rounds=game.rounds,
            steps_per_round=2 if quick else 10,
            attack_steps=game.attack_steps if game.attack_steps is not None else 1 if quick else 8,
            learning_rate=game.learning_rate,
            attack_learning_rate=game.attack_learning_rate,
            kl_coef=game.kl_coef,
        ),
        evaluation=learner_pb2.EvaluationConfig(every_steps=4 if quick else 20, num_problems=16 if quick else 128),
    )
    models = models or DemoModels()
    config.task.CopyFrom(
        learner_pb2.TaskConfig(
            name=models.task,
            data=str(models.data.resolve()) if models.data else "",
            chat_template=_CHAT[models.chat_template],
        )
    )
    return DemoPlan(
        config,
        verifier_train_steps=game.verifier_steps or (40 if quick else 300),
        round_sample_problems=game.round_problems or (24 if quick else 128),
        models=models,
        round_verifier_start=game.round_verifier_start,
        retrain=game.retrain,
    )


@asynccontextmanager
async def _services(root: Path, redis_url: str, plan: DemoPlan) -> AsyncIterator[dict[str, LocalProcess]]:
    logs, store, models = root / "logs", root / "artifacts", plan.models
    common = ["--metrics-port", "0", "--drain-delay-s", "0", "--log-format", "json"]
    task = ["--task", models.task, "--chat-template", models.chat_template]
    task += ["--data", str(models.data.resolve())] if models.data else []
    weak = ServiceProcess(
        "weak-model",
        "services.weak_model",
        [*common, "--max-batch-size", "64", "--model-path", str(models.weak.resolve())],
        logs,
        free_port(),
    )
    verifier = ServiceProcess(
        "verifier",
        "services.verifier",
        [*common, "--registry-version", "0", "--watch-registry", "--reconcile-interval-s", "1",
         "--redis-url", redis_url, "--artifact-root", str(store), "--http-port", "0", *task],
        logs,
        free_port(),
    )  # fmt: skip
    learner = ServiceProcess(
        "learner",
        "services.learner",
        [*common, "--weak-model-target", weak.target, "--verifier-target", verifier.target,
         "--redis-url", redis_url, "--artifact-root", str(store), "--runs-dir", str(root / "runs"),
         "--verifier-train-steps", str(plan.verifier_train_steps),
         "--round-sample-problems", str(plan.round_sample_problems),
         "--policy-model-path", str(models.policy.resolve()), "--verifier-init-path", str(models.weak.resolve()),
         "--round-verifier-start", plan.round_verifier_start, "--retrain", plan.retrain,
         *(["--verifier-base-samples", str(plan.base_samples)] if plan.base_samples else [])],
        logs,
        free_port(),
    )  # fmt: skip
    processes: dict[str, LocalProcess] = {"weak-model": weak, "verifier": verifier, "learner": learner}
    if plan.retrain == "queue":
        processes["worker"] = WorkerProcess(
            "worker",
            "services.jobs.verifier_training.worker_main",
            ["--redis-url", redis_url, "--artifact-root", str(store), "--work-dir", str(root / "worker"),
             "--claim-idle-s", "30", "--log-format", "json"],
            logs,
            free_port(),
        )  # fmt: skip
    try:
        yield processes
    finally:
        for process in reversed(processes.values()):
            process.stop()


async def _wait_all(processes: dict[str, LocalProcess]) -> None:
    names = {
        "weak-model": "legibility.v1.WeakModelService",
        "verifier": "legibility.v1.VerifierService",
        "learner": LEARNER_SERVICE,
    }

    async def ready(name: str, process: LocalProcess) -> float:
        if isinstance(process, ServiceProcess):
            return await process.wait_serving(names[name], 180)
        assert isinstance(process, WorkerProcess)
        return await process.wait_ready(180)

    with console.status("starting the services" + (" and the retraining worker" if "worker" in processes else "")):
        took = await asyncio.gather(*(ready(n, p) for n, p in processes.items()))
    console.print("services up: " + ", ".join(f"{n} {s:.1f} s" for n, s in zip(processes, took, strict=True)))


async def _follow(stub: learner_pb2_grpc.LearnerServiceStub, run: learner_pb2.Run, plan: DemoPlan) -> learner_pb2.Run:
    """Stream the run's events with a progress bar; returns the final Run."""
    config = plan.config
    total = config.steps + config.game.rounds * config.game.steps_per_round
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("tandem", total=total)
        async for event in watch_run(stub, run.run_id):
            if event.kind == learner_pb2.RUN_EVENT_KIND_TRAIN_STEP:
                progress.update(task, completed=event.step, description=event.message or "train")
            elif event.kind == learner_pb2.RUN_EVENT_KIND_EVALUATION:
                shown = [f"{k}={event.metrics['eval/' + k]:.3f}" for k in _SHOWN if "eval/" + k in event.metrics]
                progress.console.print(f"[bold]eval @ step {event.step}[/bold] " + " ".join(shown))
            elif event.kind in (learner_pb2.RUN_EVENT_KIND_ROUND, learner_pb2.RUN_EVENT_KIND_LOG) and event.message:
                progress.console.print(f"[cyan]{event.message}[/cyan]")
            elif event.kind == learner_pb2.RUN_EVENT_KIND_STATE:
                progress.console.print(f"run {event.message or learner_pb2.RunState.Name(event.state)}")
    return (await stub.GetRun(learner_pb2.GetRunRequest(run_id=run.run_id))).run


async def run_demo(
    out: Path,
    quick: bool = False,
    redis_url: str | None = None,
    models: DemoModels | None = None,
    game: DemoGame | None = None,
    tandem_steps: int | None = None,
) -> Path:
    """Run the demo; returns the folder of the run's report (fetched from the artifact store). Raises RuntimeError if
    the run fails."""
    started = time.perf_counter()
    root = (out / f"demo-{datetime.now(UTC):%Y%m%dT%H%M%SZ}").resolve()
    root.mkdir(parents=True)
    plan = demo_plan(quick, models, game, tandem_steps)
    redis = None
    if redis_url is None:
        redis = EmbeddedRedis(data_dir=root / "redis")
        redis.start()
        redis_url = redis.url
    try:
        client = connect(redis_url)
        try:
            record = await publish_checkpoint(
                VersionRegistry(client), ArtifactStore(root / "artifacts"), "verifier", plan.models.verifier
            )
        finally:
            await client.aclose()
        console.print(f"Redis at {redis_url}; verifier {plan.models.verifier} published as version {record.version}")
        base_problems = (game or DemoGame()).base_samples // (10 if quick else 1)
        base = await asyncio.to_thread(write_base_samples, root, plan.models, base_problems)
        plan = dataclasses.replace(plan, base_samples=base)
        async with _services(root, redis_url, plan) as processes:
            services = {n: p.target for n, p in processes.items() if isinstance(p, ServiceProcess)}
            where: dict[str, object] = {"redis_url": redis_url, "services": services}
            if "worker" in processes:
                where["worker_log"] = str(processes["worker"].log_path)
            (root / "demo.json").write_text(json.dumps(where, indent=2) + "\n")
            await _wait_all(processes)
            channel = open_channel(processes["learner"].target)
            try:
                stub = learner_pb2_grpc.LearnerServiceStub(channel)
                run = (await stub.StartRun(learner_pb2.StartRunRequest(config=plan.config))).run
                console.print(f"run {run.run_id} started: {plan.config.name}")
                final = await _follow(stub, run, plan)
            finally:
                await channel.close()
    finally:
        if redis is not None:
            redis.stop()
    if final.state != learner_pb2.RUN_STATE_SUCCEEDED:
        raise RuntimeError(f"run {final.run_id} ended {learner_pb2.RunState.Name(final.state)}: {final.error}")
    # The report the learner stored as an artifact, fetched as `legibility runs report` does (not from its disk).
    report = copy_report(final, ArtifactStore(root / "artifacts"), root / "report")
    for line in report.summary_lines():
        console.print(line)
    console.print(f"demo wall time {format_duration(time.perf_counter() - started)}")
    return report.directory
