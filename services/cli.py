"""The one `legibility` command. Each verb is a typed function; `--help` is the documentation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from services.common.settings import LoggingSettings, StoreSettings
from services.tasks.toy_models.cli import app as toy_app
from services.tools.bench_tandem import bench_tandem
from services.tools.bench_verifier import bench_verifier
from services.tools.bench_weak_model import bench_weak_model
from services.tools.loadtest_verifier import loadtest_verifier

app = typer.Typer(help="Legibility services: verifier, weak model and learner for legibility training.")
proto_app = typer.Typer(help="Generate and check the Python gRPC stubs.")
registry_app = typer.Typer(help="Read and watch model version records in Redis.")
serve_app = typer.Typer(help="Run a service until SIGTERM/SIGINT.")
bench_app = typer.Typer(help="Measure the services' throughput.")
loadtest_app = typer.Typer(help="Drive a running service with bounded load and report latency and errors.")
runs_app = typer.Typer(help="Read the runs of a learner service.")
worker_app = typer.Typer(help="Run a worker that serves a queue until SIGTERM/SIGINT.")
app.add_typer(proto_app, name="proto")
app.add_typer(registry_app, name="registry")
app.add_typer(serve_app, name="serve")
app.add_typer(toy_app, name="toy")
app.add_typer(bench_app, name="bench")
app.add_typer(loadtest_app, name="loadtest")
app.add_typer(worker_app, name="worker")
app.add_typer(runs_app, name="runs")
bench_app.command("weak-model")(bench_weak_model)
bench_app.command("verifier")(bench_verifier)
bench_app.command("tandem")(bench_tandem)
loadtest_app.command("verifier")(loadtest_verifier)
console = Console()

RedisUrl = Annotated[str | None, typer.Option(help="Redis URL [env LEGIBILITY_REDIS_URL].")]


def _store_settings(redis_url: str | None, artifact_root: Path | None = None) -> StoreSettings:
    overrides: dict[str, object] = {}
    if redis_url is not None:
        overrides["redis_url"] = redis_url
    if artifact_root is not None:
        overrides["artifact_root"] = artifact_root
    return StoreSettings(**overrides)


@app.command("build-checkpoint")
def build_checkpoint_command(
    folder: Annotated[Path, typer.Argument(help="Where to save the checkpoint (created).")],
    family: Annotated[Literal["qwen2", "llama"], typer.Option(help="Model family.")] = "qwen2",
    kind: Annotated[
        Literal["causal", "classifier"], typer.Option(help="causal (weak model, policy) or classifier (verifier).")
    ] = "causal",
    shape: Annotated[
        Literal["tiny", "qwen2-0.5b"], typer.Option(help="tiny (tests) or qwen2-0.5b (GPU throughput).")
    ] = "tiny",
    seed: Annotated[int, typer.Option(help="Random initialisation seed.")] = 0,
) -> None:
    """A random-initialised checkpoint and a tokenizer trained here (no download): real shapes for GPU benches."""
    from services.tools.random_checkpoint import build_checkpoint

    build_checkpoint(folder, family, kind, seed, shape)
    typer.echo(f"saved a random {shape} {family} {kind} checkpoint in {folder}")


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option(help="Folder that receives demo-<time>/ (services' logs, artifacts, the run).")
    ] = Path("runs"),
    quick: Annotated[
        bool, typer.Option(help="A minutes-long run (tiny steps and rounds): checks the whole path.")
    ] = False,
    redis_url: RedisUrl = None,
    task: Annotated[str, typer.Option(help="Task: toy (bundled), gsm8k or math.")] = "toy",
    data: Annotated[
        Path | None, typer.Option(help="The task's jsonl file, or a folder of train.jsonl/test.jsonl.", exists=True)
    ] = None,
    chat_template: Annotated[
        str, typer.Option(help="auto: prompts use the tokenizer's chat template when it has one; none: never.")
    ] = "auto",
    policy: Annotated[
        Path | None, typer.Option(help="Causal LM to train [default: bundled strong].", exists=True)
    ] = None,
    weak: Annotated[
        Path | None, typer.Option(help="Causal LM of the weak model [default: bundled weak].", exists=True)
    ] = None,
    verifier: Annotated[
        Path | None, typer.Option(help="Sequence-classification verifier [default: bundled].", exists=True)
    ] = None,
    tandem_steps: Annotated[
        int | None, typer.Option(help="Tandem steps before the game (0: a game-only run) [default: 100].", min=0)
    ] = None,
    game_rounds: Annotated[int, typer.Option(help="Prover–verifier rounds after the tandem phase.", min=1)] = 2,
    game_lr: Annotated[float, typer.Option(help="The prover's learning rate in the game (tandem phase: 3e-5).")] = 1e-4,
    attack_steps: Annotated[
        int | None, typer.Option(help="Budget of the sneaky-only attack on each round's verifier (0: off).", min=0)
    ] = None,
    attack_lr: Annotated[float, typer.Option(help="The sneaky-only attacker's learning rate.")] = 3e-4,
    game_kl: Annotated[
        float | None, typer.Option(help="KL penalty to the initial policy in game steps [default: none].", min=0)
    ] = None,
    round_verifier_start: Annotated[
        str, typer.Option(help="warm: each round's verifier starts from the last one; fresh: from the weak LM body.")
    ] = "warm",
    verifier_steps: Annotated[
        int | None, typer.Option(help="Retraining steps of each round's verifier [default: 300].", min=1)
    ] = None,
    round_problems: Annotated[
        int | None, typer.Option(help="Problems the prover solves for each round's verifier [default: 128].", min=4)
    ] = None,
    base_problems: Annotated[
        int,
        typer.Option(help="Toy problems sampled as every round verifier's base data (0: none; toy task only).", min=0),
    ] = 500,
    retrain: Annotated[
        str,
        typer.Option(help="in_process: the learner retrains each round's verifier; queue: a separate worker process."),
    ] = "in_process",
) -> None:
    """Run the end-to-end demo: Redis, the three services on loopback, a tandem phase and two game rounds; a report.

    With --task/--data and --policy/--weak/--verifier it runs on your own data and checkpoints instead of the toy world.
    """
    from services.common.lifetime import run_command
    from services.common.logs import configure_logging
    from services.demo import DemoGame, DemoModels, run_demo
    from services.tasks.catalog import load_task

    settings = LoggingSettings()
    configure_logging(settings.log_level, settings.log_format, "demo")
    if chat_template not in ("auto", "none"):
        raise typer.BadParameter("must be auto or none", param_hint="--chat-template")
    for value, flag in ((game_lr, "--game-lr"), (attack_lr, "--attack-lr")):
        if not value > 0:
            raise typer.BadParameter("must be > 0", param_hint=flag)
    if retrain not in ("in_process", "queue"):
        raise typer.BadParameter("must be in_process or queue", param_hint="--retrain")
    if round_verifier_start not in ("warm", "fresh"):
        raise typer.BadParameter("must be warm or fresh", param_hint="--round-verifier-start")
    try:
        load_task(task, data)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--task/--data") from error
    defaults = DemoModels()
    models = DemoModels(
        task=task,
        data=data,
        chat_template="none" if chat_template == "none" else "auto",
        policy=policy or defaults.policy,
        weak=weak or defaults.weak,
        verifier=verifier or defaults.verifier,
    )
    try:
        game = DemoGame(
            game_rounds,
            game_lr,
            attack_steps,
            kl_coef=game_kl,
            attack_learning_rate=attack_lr,
            round_verifier_start=round_verifier_start,
            verifier_steps=verifier_steps,
            round_problems=round_problems,
            base_samples=base_problems,
            retrain=retrain,
        )
        run_command(run_demo(out, quick, redis_url, models, game, tandem_steps))
    except RuntimeError as error:
        console.print(f"[red]demo failed:[/red] {error}")
        raise typer.Exit(1) from error


@app.command()
def publish(
    name: Annotated[str, typer.Argument(help="Model name in the registry, e.g. verifier.")],
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory to store and publish.", exists=True)],
    version: Annotated[int | None, typer.Option(help="Version to publish (default: current + 1).")] = None,
    metric: Annotated[list[str] | None, typer.Option(help="Metric as key=value; repeatable.")] = None,
    redis_url: RedisUrl = None,
    artifact_root: Annotated[Path | None, typer.Option(help="[env LEGIBILITY_ARTIFACT_ROOT]")] = None,
) -> None:
    """Copy a checkpoint into the artifact store and publish it as a new version (refused if not higher)."""

    from services.common.artifacts import ArtifactStore
    from services.common.errors import DomainError
    from services.common.publish import publish_checkpoint
    from services.common.registry import VersionRegistry

    settings = _store_settings(redis_url, artifact_root)
    metrics: dict[str, float | int | str] = {}
    for item in metric or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r} is not key=value", param_hint="--metric")
        metrics[key] = _number_or_text(value)

    async def run() -> None:
        client = settings.redis_client()
        try:
            record = await publish_checkpoint(
                VersionRegistry(client),
                ArtifactStore(settings.artifact_root),
                name,
                checkpoint,
                version=version,
                metrics=metrics,
            )
        finally:
            await client.aclose()
        console.print_json(record.to_json())

    try:
        asyncio.run(run())
    except DomainError as error:
        console.print(f"[red]refused:[/red] {error}")
        raise typer.Exit(1) from error


def _number_or_text(value: str) -> float | int | str:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


@runs_app.command("report")
def runs_report(
    run_id: str,
    out: Annotated[
        Path | None, typer.Option(help="Folder to copy the report into [default: ./<run_id>-report].")
    ] = None,
    learner: Annotated[str, typer.Option(help="Learner service target.", envvar="LEGIBILITY_LEARNER_TARGET")] = (
        "127.0.0.1:50053"
    ),
    artifact_root: Annotated[
        Path | None, typer.Option(help="Artifact store root [env LEGIBILITY_ARTIFACT_ROOT].")
    ] = None,
    token: Annotated[str | None, typer.Option(help="Bearer token.", envvar="LEGIBILITY_CLIENT_TOKEN")] = None,
) -> None:
    """Fetch a run's report (report.md, report.json, plots) from the artifact store, checked against its manifest."""
    import grpc

    from services.common.artifacts import ArtifactStore
    from services.common.errors import DomainError
    from services.tools.run_report import copy_report, get_run

    store = ArtifactStore(_store_settings(None, artifact_root).artifact_root)
    try:
        run = asyncio.run(get_run(learner, run_id, token))
        fetched = copy_report(run, store, out or Path(f"{run_id}-report"))
    except grpc.aio.AioRpcError as error:
        console.print(f"[red]{error.code().name}: {error.details()}[/red]")
        raise typer.Exit(1) from error
    except DomainError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from error
    for line in fetched.summary_lines():
        console.print(line)


@registry_app.command("show")
def registry_show(name: str, redis_url: RedisUrl = None) -> None:
    """Print the current version record of a model (exit 1 if none)."""
    from services.common.registry import VersionRegistry

    async def run() -> str | None:
        client = _store_settings(redis_url).redis_client()
        try:
            record = await VersionRegistry(client).current(name)
        finally:
            await client.aclose()
        return None if record is None else record.to_json()

    found = asyncio.run(run())
    if found is None:
        console.print(f"no version of {name!r} published")
        raise typer.Exit(1)
    console.print_json(found)


@registry_app.command("watch")
def registry_watch(
    name: str,
    redis_url: RedisUrl = None,
    count: Annotated[int, typer.Option(help="Stop after this many records (0 = forever).")] = 0,
) -> None:
    """Print each new version record of a model as one JSON line, as replicas see them."""
    from services.common.registry import VersionRegistry

    settings = _store_settings(redis_url)

    async def run() -> None:
        client = settings.redis_client()
        seen = 0
        try:
            async for record in VersionRegistry(client).watch(name, reconcile_interval_s=settings.reconcile_interval_s):
                print(json.dumps(json.loads(record.to_json())), flush=True)
                seen += 1
                if count and seen >= count:
                    return
        finally:
            await client.aclose()

    asyncio.run(run())


# Flags go to the service's pydantic-settings parser, so `--help` lists every setting with its env variable.
_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


@serve_app.command("weak-model", context_settings=_PASS_THROUGH, add_help_option=False)
def serve_weak_model(ctx: typer.Context) -> None:
    """Serve the frozen weak model (Continue, LogProbs); `legibility serve weak-model --help` lists the flags."""
    from services.weak_model.__main__ import main

    main(ctx.args, prog="legibility serve weak-model")


@serve_app.command("verifier", context_settings=_PASS_THROUGH, add_help_option=False)
def serve_verifier(ctx: typer.Context) -> None:
    """Serve the verifier (Score, ScoreSteps); `legibility serve verifier --help` lists the flags."""
    from services.verifier.__main__ import main

    main(ctx.args, prog="legibility serve verifier")


@serve_app.command("learner", context_settings=_PASS_THROUGH, add_help_option=False)
def serve_learner(ctx: typer.Context) -> None:
    """Serve the learner (StartRun, WatchRun, ...); `legibility serve learner --help` lists the flags."""
    from services.learner.__main__ import main

    main(ctx.args, prog="legibility serve learner")


@app.command("train-verifier", context_settings=_PASS_THROUGH, add_help_option=False)
def train_verifier(ctx: typer.Context) -> None:
    """Retrain the verifier on labelled samples of every round and publish it; `--help` lists the flags."""
    from services.jobs.verifier_training.__main__ import main

    main(ctx.args, prog="legibility train-verifier")


@worker_app.command("train-verifier", context_settings=_PASS_THROUGH, add_help_option=False)
def worker_train_verifier(ctx: typer.Context) -> None:
    """Train the verifier for each request on the retraining stream (learner in queue mode); `--help`: flags."""
    from services.jobs.verifier_training.worker_main import main

    main(ctx.args, prog="legibility worker train-verifier")


@proto_app.command("generate")
def proto_generate() -> None:
    """Regenerate services/common/genproto from proto/ (needs the dev extras)."""
    from services.common import protogen

    for path in protogen.generate():
        console.print(f"wrote {path.relative_to(protogen.REPO_ROOT)}")


@proto_app.command("check")
def proto_check() -> None:
    """Fail if the committed stubs differ from what proto/ generates."""
    from services.common import protogen

    try:
        protogen.check()
    except protogen.StaleStubsError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from error
    console.print("generated stubs are up to date")


if __name__ == "__main__":
    app()
