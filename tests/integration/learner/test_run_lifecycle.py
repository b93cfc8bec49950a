"""A tiny tandem run end to end: StartRun → WatchRun (history + live, resumable) → GetRun, ListRuns."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from services.common.artifacts import ArtifactStore
from services.common.genproto.legibility.v1 import learner_pb2
from services.common.run_watch import watch_run
from services.tools.run_report import copy_report
from tests.integration.learner.conftest import Dependencies, LearnerFactory, RunningLearner, tiny_tandem, watch

K = learner_pb2


@pytest.mark.slow
async def test_tandem_run_streams_events_and_succeeds(learner: RunningLearner, runs_dir: Path, tmp_path: Path) -> None:
    health = await learner.health.Check(health_pb2.HealthCheckRequest(service="legibility.v1.LearnerService"))
    assert health.status == health_pb2.HealthCheckResponse.SERVING

    started = await learner.stub.StartRun(K.StartRunRequest(config=tiny_tandem(steps=2, every_steps=1)))
    run = started.run
    assert re.fullmatch(r"run-\d{8}t\d{6}-[0-9a-f]{6}", run.run_id)
    assert re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", f"{run.run_id}-samples")
    assert run.state in (K.RUN_STATE_PENDING, K.RUN_STATE_RUNNING)
    assert run.config.optimizer.group_size == 2

    # Two watchers at once while the run is live, and one attaching after the end: all get every event.
    events, concurrent = await asyncio.gather(watch(learner.stub, run.run_id), watch(learner.stub, run.run_id))
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert concurrent == events
    assert await watch(learner.stub, run.run_id) == events

    states = [e.state for e in events if e.kind == K.RUN_EVENT_KIND_STATE]
    assert states == [K.RUN_STATE_RUNNING, K.RUN_STATE_SUCCEEDED]
    assert events[0].kind == K.RUN_EVENT_KIND_STATE and events[0].state == K.RUN_STATE_RUNNING
    assert events[-1].kind == K.RUN_EVENT_KIND_STATE and events[-1].state == K.RUN_STATE_SUCCEEDED
    train = [e for e in events if e.kind == K.RUN_EVENT_KIND_TRAIN_STEP]
    assert [e.step for e in train] == [1, 2]
    assert all("train/reward" in e.metrics for e in train)
    evals = [e for e in events if e.kind == K.RUN_EVENT_KIND_EVALUATION]
    assert [e.step for e in evals] == [0, 1, 2]  # before training, then every step
    assert all(0.0 <= e.metrics["eval/solo_accuracy"] <= 1.0 for e in evals)
    assert all(e.run_id == run.run_id and e.time.seconds > 0 for e in events)

    got = (await learner.stub.GetRun(K.GetRunRequest(run_id=run.run_id))).run
    assert got.state == K.RUN_STATE_SUCCEEDED
    assert got.step == 2
    assert "eval/jargon_rate" in got.metrics and "train/reward" in got.metrics
    assert got.error == ""
    # The learner stored the report as an artifact; a client fetches it from the store, checked file by file.
    assert got.report_uri == f"artifact://{run.run_id}-report/v000001"
    fetched = copy_report(got, ArtifactStore(runs_dir.parent / "artifacts"), tmp_path / "fetched")
    assert fetched.content["counts"]["train_steps"] == 2 and fetched.content["counts"]["evaluations"] == 3
    assert fetched.content["title"] == f"Run {run.run_id}: tiny"
    assert "| jargon rate (greedy) |" in fetched.markdown.read_text()
    assert (tmp_path / "fetched" / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert got.HasField("finished_at") and not run.HasField("finished_at")
    assert got.created_at.ToNanoseconds() <= got.started_at.ToNanoseconds() <= got.finished_at.ToNanoseconds()

    listed = (await learner.stub.ListRuns(K.ListRunsRequest())).runs
    assert [r.run_id for r in listed] == [run.run_id]
    assert listed[0].state == K.RUN_STATE_SUCCEEDED

    # Resume a stream: only events after the given sequence; past the end, nothing (the run is over).
    k = 3
    later = await watch(learner.stub, run.run_id, after_sequence=k)
    assert [e.sequence for e in later] == list(range(k + 1, len(events) + 1))
    assert later == events[k:]
    assert await watch(learner.stub, run.run_id, after_sequence=len(events)) == []


async def test_unknown_run_is_not_found(learner: RunningLearner) -> None:
    for call in (
        learner.stub.GetRun(K.GetRunRequest(run_id="run-nope")),
        learner.stub.StopRun(K.StopRunRequest(run_id="run-nope")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert "run-nope" in raised.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await watch(learner.stub, "run-nope")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.slow
async def test_watch_run_survives_connection_recycling(
    start_learner_server: LearnerFactory, dependencies: Dependencies
) -> None:
    # The server closes connections after 1 s (+0.2 s grace): a plain WatchRun of a longer run ends UNAVAILABLE,
    # watch_run resumes after the last sequence and sees every event once.
    learner = await start_learner_server(
        **dependencies.targets, max_connection_age_s=1.0, max_connection_age_grace_s=0.2
    )
    run = (await learner.stub.StartRun(K.StartRunRequest(config=tiny_tandem(steps=4, every_steps=1)))).run
    events = [e async for e in watch_run(learner.stub, run.run_id)]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].kind == K.RUN_EVENT_KIND_STATE and events[-1].state == K.RUN_STATE_SUCCEEDED
    assert events[-1].time.ToNanoseconds() - events[0].time.ToNanoseconds() > 1.2e9  # it did outlive a connection
    # Without the resume, the same watch of a second run is cut.
    again = (await learner.stub.StartRun(K.StartRunRequest(config=tiny_tandem(steps=4, every_steps=1)))).run
    with pytest.raises(grpc.aio.AioRpcError) as cut:
        await watch(learner.stub, again.run_id)
    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
    await anext(aiter(watch_run(learner.stub, again.run_id, after_sequence=10_000)), None)  # let it finish
