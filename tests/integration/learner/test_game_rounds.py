"""Two quick prover–verifier rounds against real services: the verifier version advances, the learner waits for it,
and a run stopped mid-round resumes with its stored samples and published versions intact."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from services.common.artifacts import MANIFEST_NAME, ArtifactStore
from services.common.bundled_models import BUNDLED_VERIFIER
from services.common.client import open_channel
from services.common.genproto.legibility.v1 import learner_pb2, verifier_pb2_grpc, weak_model_pb2_grpc
from services.common.publish import publish_checkpoint
from services.common.redis_launcher import EmbeddedRedis
from services.common.registry import VersionRegistry, connect
from services.common.samples import load_samples, samples_uri
from services.jobs.verifier_training.requests import RetrainFailed
from services.learner.clients.verifier import VerifierClient
from services.learner.clients.weak_model import WeakModelClient
from services.learner.runs.config import resolve
from services.learner.runs.events import RunEvent
from services.learner.runs.run import Run
from services.learner.settings import LearnerSettings
from services.verifier.app import start_verifier
from services.verifier.settings import VerifierSettings
from services.weak_model.app import start_weak_model
from services.weak_model.settings import WeakModelSettings
from tests.support.teardown import bounded
from tests.support.workers import Workers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # 44-49 s each on a slow day; 120 s left too little room


@dataclass
class Services:
    weak: WeakModelClient
    verifier: VerifierClient
    settings: LearnerSettings
    store: ArtifactStore


@pytest.fixture
async def services(redis_server: EmbeddedRedis, tmp_path: Path) -> AsyncIterator[Services]:
    store = ArtifactStore(tmp_path / "artifacts")
    client = connect(redis_server.url)
    await publish_checkpoint(VersionRegistry(client), store, "verifier", BUNDLED_VERIFIER)
    await client.aclose()
    quick = {"port": 0, "metrics_port": 0, "drain_delay_s": 0, "grace_period_s": 1, "max_delay_ms": 2.0}
    weak_app = await start_weak_model(WeakModelSettings(**quick))
    verifier_app = await start_verifier(
        VerifierSettings(
            **quick, http_enabled=False, registry_version=0, watch_registry=True, reconcile_interval_s=0.5,
            redis_url=redis_server.url, artifact_root=store.root,
        )
    )  # fmt: skip
    channels = [open_channel(f"127.0.0.1:{app.server.port}") for app in (weak_app, verifier_app)]
    settings = LearnerSettings(
        redis_url=redis_server.url, artifact_root=store.root, runs_dir=tmp_path / "runs",
        verifier_train_steps=30, round_sample_problems=48, torch_threads=1, version_wait_s=30,
    )  # fmt: skip
    yield Services(
        WeakModelClient(weak_model_pb2_grpc.WeakModelServiceStub(channels[0])),
        VerifierClient(verifier_pb2_grpc.VerifierServiceStub(channels[1])),
        settings,
        store,
    )
    for name, channel in zip(("weak model", "verifier"), channels, strict=True):
        await bounded(f"close the {name} channel", channel.close())
    await bounded("stop the verifier", verifier_app.stop())
    await bounded("stop the weak model", weak_app.stop())


def _config(dca: bool = False, attack_steps: int = 0) -> learner_pb2.RunConfig:
    return learner_pb2.RunConfig(
        mode=learner_pb2.RUN_MODE_TANDEM_GAME,
        steps=1,
        seed=0,
        optimizer=learner_pb2.PolicyOptimizer(learning_rate=3e-5, group_size=4, problems_per_step=2, max_new_tokens=64),
        game=learner_pb2.GameConfig(
            rounds=2, steps_per_round=2, dca=dca, attack_steps=attack_steps, kl_coef=0.05 if dca else None
        ),
        evaluation=learner_pb2.EvaluationConfig(every_steps=100, num_problems=8),
    )


def _run(services: Services, events: list[RunEvent], config: learner_pb2.RunConfig, run_id: str = "game") -> Run:
    options = resolve(config, services.settings.policy_model_path)
    return Run(run_id, options, services.settings, services.weak, services.verifier, events.append)


async def test_two_rounds_advance_the_verifier_and_the_learner_waits(services: Services) -> None:
    events: list[RunEvent] = []
    await _run(services, events, _config(dca=True, attack_steps=1)).execute()

    published = [e.metrics["verifier_version"] for e in events if e.kind == "round" and "verifier_train_s" in e.metrics]
    served = [e for e in events if e.kind == "round" and "verifier_wait_s" in e.metrics]
    assert published == [2.0, 3.0]  # version 1 is the bundled verifier
    assert [e.metrics["verifier_version"] for e in served] == [2.0, 3.0]
    assert all(0 <= e.metrics["verifier_wait_s"] < 30 for e in served)
    # Every game step was scored by the round's verifier or a newer one, never the one before.
    game_steps = [e for e in events if e.kind == "train" and e.message == "game"]
    assert len(game_steps) >= 2
    assert all("train/ref_kl" in step.metrics for step in game_steps)  # game.kl_coef loaded the reference
    # ... anchored at the policy that entered the game (after the tandem step), not the initial checkpoint.
    anchor = services.settings.runs_dir / "game" / "game_reference" / "model.safetensors"
    initial = services.settings.policy_model_path / "model.safetensors"
    assert anchor.is_file() and anchor.read_bytes() != initial.read_bytes()
    for step in game_steps:
        round_version = published[step.round]
        assert step.metrics["train/verifier_version"] >= round_version
    final_eval = [e for e in events if e.kind == "eval"][-1]
    assert final_eval.metrics["eval/verifier_version"] == 3.0
    for round_ in (0, 1):
        samples, _ = load_samples(services.store, samples_uri("game-samples", round_))
        assert len(samples) == 48 * 4 and {s.role for s in samples} == {"helpful", "sneaky"}
        assert {s.round for s in samples} == {round_}
    # Warm starts: round 0 from the version the registry held (v1, the bundled verifier), round 1 from round 0's
    # published version (an artifact any worker can read), each pinned in the request by its manifest sha256.
    inits = [
        json.loads((services.settings.runs_dir / "game" / "verifier" / f"round{r}" / "training.json").read_text())[
            "settings"
        ]["init_model_path"]
        for r in (0, 1)
    ]
    assert inits == [
        str(services.store.resolve("artifact://verifier/v000001")),
        str(services.store.resolve("artifact://verifier/v000002")),
    ]
    # Each round's verifier was attacked once, after it was served, within the 1-step budget (2 = not exploited).
    attacks = [e for e in events if e.kind == "round" and "attack_steps_to_exploit" in e.metrics]
    assert [(e.round, e.metrics["verifier_version"]) for e in attacks] == [(0, 2.0), (1, 3.0)]
    assert all(e.metrics["attack_steps_to_exploit"] in (0.0, 1.0, 2.0) for e in attacks)
    assert all(0.0 <= e.metrics["attack_last_fool_rate"] <= 1.0 for e in attacks)


async def test_a_stopped_run_resumes_with_its_samples_and_versions(services: Services) -> None:
    events: list[RunEvent] = []
    run = _run(services, events, _config(), run_id="resumed")

    def stop_in_round_zero(event: RunEvent) -> None:
        events.append(event)
        if event.kind == "train" and event.message == "game":
            run.stop_requested = True

    run.on_event = stop_in_round_zero
    await run.execute()
    assert not run.state.finished and run.state.round == 0
    uri = samples_uri("resumed-samples", 0)
    manifest_sha = hashlib.sha256((services.store.resolve(uri) / MANIFEST_NAME).read_bytes()).hexdigest()

    resumed_events: list[RunEvent] = []
    resumed = _run(services, resumed_events, _config(), run_id="resumed")
    await resumed.execute()
    assert resumed.state.finished
    first_train = next(e for e in resumed_events if e.kind == "train")
    assert first_train.step == run.state.step + 1  # no step redone
    assert resumed.state.verifier_versions == {"0": 2, "1": 3}  # round 0's verifier was not retrained
    assert hashlib.sha256((services.store.resolve(uri) / MANIFEST_NAME).read_bytes()).hexdigest() == manifest_sha
    samples, _ = load_samples(services.store, uri)
    assert len(samples) == 48 * 4


# ---- queue mode: the rounds' verifiers trained by `legibility worker train-verifier` processes ---------------------

STREAM = "test:retrain"


@pytest.fixture
def workers(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[Workers]:
    running = Workers(redis_server.url, tmp_path, STREAM)
    yield running
    running.stop_all()


def _queued(services: Services) -> Services:
    settings = services.settings.model_copy(
        update={"retrain": "queue", "retrain_stream": STREAM, "retrain_timeout_s": 300}
    )
    return replace(services, settings=settings)


async def test_queue_mode_trains_every_round_on_a_worker(
    services: Services, workers: Workers, redis_client: aioredis.Redis
) -> None:
    await workers.start("w1", services.store.root)
    events: list[RunEvent] = []
    await _run(_queued(services), events, _config()).execute()

    published = [e for e in events if e.kind == "round" and "verifier_train_s" in e.metrics]
    assert [e.metrics["verifier_version"] for e in published] == [2.0, 3.0]
    assert all(e.message.endswith("(trained by w1)") and e.metrics["verifier_final_loss"] > 0 for e in published)
    relayed = [e.message for e in events if e.kind == "log" and "verifier retraining" in e.message]
    assert any(m.startswith("round 0: verifier retraining queued on test:retrain") for m in relayed)
    assert any(m.startswith("round 1: verifier retraining by w1 (attempt 1)") for m in relayed)
    assert await redis_client.xlen(STREAM) == 2  # one request per round
    assert (await VersionRegistry(redis_client).current("verifier")).version == 3


async def test_a_learner_restarted_while_waiting_resumes_without_a_second_request(
    services: Services, workers: Workers, redis_client: aioredis.Redis
) -> None:
    config = _config()
    config.game.rounds = 1
    waiting = asyncio.create_task(_run(_queued(services), [], config, run_id="restarted").execute())
    for _ in range(600):  # no worker yet: the round's request waits in the stream
        if await redis_client.xlen(STREAM) == 1 or waiting.done():
            break
        await asyncio.sleep(0.2)
    assert await redis_client.xlen(STREAM) == 1
    waiting.cancel()  # the learner dies while it waits
    with pytest.raises(asyncio.CancelledError):
        await waiting

    await workers.start("w1", services.store.root)
    events: list[RunEvent] = []
    resumed = _run(_queued(services), events, config, run_id="restarted")
    await resumed.execute()
    assert resumed.state.finished and resumed.state.verifier_versions == {"0": 2}
    assert await redis_client.xlen(STREAM) == 1  # asked again, queued once
    assert not any("queued on" in e.message for e in events)


async def test_a_dead_lettered_round_fails_the_run_with_the_workers_error(
    services: Services, workers: Workers, tmp_path: Path
) -> None:
    # A worker on another artifact store cannot read what the learner stored: every attempt fails the same way.
    await workers.start("misconfigured", tmp_path / "elsewhere", "--max-attempts", "2", "--claim-idle-s", "1")
    config = _config()
    config.game.rounds = 1
    with pytest.raises(RetrainFailed, match=r"failed: ArtifactError: .*missing") as failed:
        await _run(_queued(services), [], config, run_id="poisoned").execute()
    assert "poisoned:round0" in str(failed.value)
