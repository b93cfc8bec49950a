"""Fixtures: the real weak-model and verifier servers (bundled models) and learner servers, all on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.common.genproto.legibility.v1 import learner_pb2, learner_pb2_grpc
from services.learner.app import LearnerApp, start_learner
from services.learner.settings import LearnerSettings
from services.verifier.app import VerifierApp, start_verifier
from services.verifier.settings import VerifierSettings
from services.weak_model.app import WeakModelApp, start_weak_model
from services.weak_model.settings import WeakModelSettings
from tests.support.running import QUICK, RunningService, ServiceGroup
from tests.support.teardown import bounded

MODELS = Path(__file__).resolve().parents[3] / "models"


@dataclass
class Dependencies:
    """The services a learner calls, serving on loopback."""

    weak: WeakModelApp
    verifier: VerifierApp

    @property
    def targets(self) -> dict[str, str]:
        return {"weak_model_target": self.weak.server.address, "verifier_target": self.verifier.server.address}

    async def stop(self) -> None:
        await asyncio.gather(
            bounded("stop the weak model", self.weak.stop()), bounded("stop the verifier", self.verifier.stop())
        )


async def start_dependencies() -> tuple[WeakModelApp, VerifierApp]:
    """A weak-model server (transformers engine) and a verifier server, both from the bundled models."""
    weak = await start_weak_model(
        WeakModelSettings(**QUICK, model_path=MODELS / "weak", max_delay_ms=2.0, torch_threads=1)
    )
    verifier = await start_verifier(
        VerifierSettings(**QUICK, model_path=MODELS / "verifier", max_delay_ms=2.0, http_enabled=False, torch_threads=1)
    )
    return weak, verifier


RunningLearner = RunningService[LearnerApp, learner_pb2_grpc.LearnerServiceStub]


LearnerFactory = Callable[..., Awaitable[RunningLearner]]


@pytest.fixture
async def dependencies() -> AsyncIterator[Dependencies]:
    deps = Dependencies(*await start_dependencies())
    yield deps
    await deps.stop()


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def learner_settings(runs_dir: Path, **overrides: Any) -> LearnerSettings:
    """Settings for a learner on a free loopback port, runs in runs_dir, artifacts beside it."""
    fields: dict[str, Any] = QUICK | {
        "runs_dir": runs_dir,
        "artifact_root": runs_dir.parent / "artifacts",
        "torch_threads": 1,
    }
    return LearnerSettings(**(fields | overrides))


@pytest.fixture
async def start_learner_server(runs_dir: Path) -> AsyncIterator[LearnerFactory]:
    """Factory: start_learner_server(**LearnerSettings fields) over runs_dir, stopped after the test."""
    running = ServiceGroup()

    async def start(**overrides: Any) -> RunningLearner:
        app = await start_learner(learner_settings(runs_dir, **overrides))
        return running.connect(app, learner_pb2_grpc.LearnerServiceStub)

    yield start
    await running.stop()


@pytest.fixture
async def learner(start_learner_server: LearnerFactory, dependencies: Dependencies) -> RunningLearner:
    """A learner wired to the real weak-model and verifier servers."""
    return await start_learner_server(**dependencies.targets)


def tiny_tandem(steps: int = 2, every_steps: int = 1, **fields: Any) -> learner_pb2.RunConfig:
    """A tandem run small enough for a test on two CPU cores."""
    return learner_pb2.RunConfig(
        name="tiny",
        mode=learner_pb2.RUN_MODE_TANDEM,
        steps=steps,
        seed=7,
        optimizer=learner_pb2.PolicyOptimizer(learning_rate=3e-5, problems_per_step=2, group_size=2, max_new_tokens=64),
        evaluation=learner_pb2.EvaluationConfig(every_steps=every_steps, num_problems=4),
        **fields,
    )


async def watch(
    stub: learner_pb2_grpc.LearnerServiceStub, run_id: str, after_sequence: int = 0, deadline_s: float = 120.0
) -> list[learner_pb2.RunEvent]:
    """Every event WatchRun sends until the stream ends."""
    call = stub.WatchRun(learner_pb2.WatchRunRequest(run_id=run_id, after_sequence=after_sequence), timeout=deadline_s)
    return [reply.event async for reply in call]
