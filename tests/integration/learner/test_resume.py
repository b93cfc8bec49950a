"""StopRun, and a learner restarted over the same runs_dir: runs are listed, replayable, and unfinished ones resume."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.client import open_channel
from services.common.genproto.legibility.v1 import learner_pb2, learner_pb2_grpc
from services.common.ports import free_port
from services.learner.runs.state import load_state
from tests.integration.learner.conftest import Dependencies, LearnerFactory, tiny_tandem, watch

K = learner_pb2
REPO = Path(__file__).resolve().parents[3]


@pytest.mark.slow
async def test_stopped_run_ends_stopped_and_is_listed_after_a_restart(
    start_learner_server: LearnerFactory, dependencies: Dependencies, runs_dir: Path, tmp_path: Path
) -> None:
    learner = await start_learner_server(**dependencies.targets)
    run_id = (await learner.stub.StartRun(K.StartRunRequest(config=tiny_tandem(steps=50, every_steps=10)))).run.run_id
    events: list[K.RunEvent] = []
    async for reply in learner.stub.WatchRun(K.WatchRunRequest(run_id=run_id), timeout=120):
        events.append(reply.event)
        if reply.event.kind == K.RUN_EVENT_KIND_TRAIN_STEP and reply.event.step == 1:
            stopping = (await learner.stub.StopRun(K.StopRunRequest(run_id=run_id))).run
            assert stopping.state == K.RUN_STATE_RUNNING
    assert events[-1].kind == K.RUN_EVENT_KIND_STATE and events[-1].state == K.RUN_STATE_STOPPED
    stopped = (await learner.stub.GetRun(K.GetRunRequest(run_id=run_id))).run
    assert stopped.state == K.RUN_STATE_STOPPED
    assert 1 <= stopped.step < 50
    assert (await learner.stub.StopRun(K.StopRunRequest(run_id=run_id))).run.state == K.RUN_STATE_STOPPED
    # A stopped run has a partial report in the artifact store, which `legibility runs report` fetches.
    assert stopped.report_uri == f"artifact://{run_id}-report/v000001"
    fetched = await _runs_report(learner.app.server.port, runs_dir, run_id, tmp_path / "fetched")
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    report = json.loads((tmp_path / "fetched" / "report.json").read_text())
    assert report["title"].endswith("(stopped; partial report)") and report["counts"]["train_steps"] == stopped.step
    assert "report: " in fetched.stdout and (tmp_path / "fetched" / "report.md").is_file()
    unknown = await _runs_report(learner.app.server.port, runs_dir, "run-nope", tmp_path / "nope")
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stdout and not (tmp_path / "nope").exists()

    await learner.app.stop()
    restarted = await start_learner_server(**dependencies.targets)
    listed = (await restarted.stub.ListRuns(K.ListRunsRequest())).runs
    assert [(r.run_id, r.state, r.step) for r in listed] == [(run_id, K.RUN_STATE_STOPPED, stopped.step)]
    assert listed[0].config == tiny_tandem(steps=50, every_steps=10)
    assert listed[0].metrics == stopped.metrics
    # The history replays from metrics.jsonl with the same sequence numbers; a stopped run is not resumed.
    assert await watch(restarted.stub, run_id) == events
    await asyncio.sleep(0.5)
    assert (await restarted.stub.GetRun(K.GetRunRequest(run_id=run_id))).run.state == K.RUN_STATE_STOPPED


@pytest.mark.slow
async def test_graceful_shutdown_pauses_a_live_run_and_the_next_learner_resumes_it(
    start_learner_server: LearnerFactory, dependencies: Dependencies, runs_dir: Path
) -> None:
    learner = await start_learner_server(**dependencies.targets)
    run_id = (await learner.stub.StartRun(K.StartRunRequest(config=tiny_tandem(steps=50, every_steps=50)))).run.run_id
    async for reply in learner.stub.WatchRun(K.WatchRunRequest(run_id=run_id), timeout=60):
        if reply.event.kind == K.RUN_EVENT_KIND_TRAIN_STEP:
            break
    await learner.app.stop()  # the run checkpoints after its step and stays RUNNING
    checkpoint = load_state(runs_dir / run_id)
    assert checkpoint is not None and 1 <= checkpoint.step < 50 and not checkpoint.finished
    assert json.loads((runs_dir / run_id / "run.json").read_text())["state"] == "running"

    restarted = await start_learner_server(**dependencies.targets)
    async for reply in restarted.stub.WatchRun(K.WatchRunRequest(run_id=run_id), timeout=60):
        if reply.event.kind == K.RUN_EVENT_KIND_TRAIN_STEP and reply.event.step > checkpoint.step:
            break
    assert reply.event.step == checkpoint.step + 1
    await restarted.stub.StopRun(K.StopRunRequest(run_id=run_id))
    events = await watch(restarted.stub, run_id)
    assert events[-1].state == K.RUN_STATE_STOPPED


async def _runs_report(port: int, runs_dir: Path, run_id: str, out: Path) -> subprocess.CompletedProcess[str]:
    """`legibility runs report` as a process (in a thread: the learner it asks serves on this event loop)."""
    command = [sys.executable, "-m", "services.cli", "runs", "report", run_id, "--learner", f"127.0.0.1:{port}"]
    command += ["--artifact-root", str(runs_dir.parent / "artifacts"), "--out", str(out)]
    env = os.environ | {"COLUMNS": "200"}
    return await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=60, env=env)


async def _wait_serving(channel, deadline_s: float) -> None:  # type: ignore[no-untyped-def]
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(service="legibility.v1.LearnerService"), timeout=2)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_killed_learner_resumes_its_run_from_the_checkpoint(
    start_learner_server: LearnerFactory, dependencies: Dependencies, runs_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = os.environ | {
        "LEGIBILITY_PORT": str(port),
        "LEGIBILITY_METRICS_ENABLED": "false",
        "LEGIBILITY_RUNS_DIR": str(runs_dir),
        "LEGIBILITY_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "LEGIBILITY_WEAK_MODEL_TARGET": dependencies.weak.server.address,
        "LEGIBILITY_VERIFIER_TARGET": dependencies.verifier.server.address,
        "LEGIBILITY_TORCH_THREADS": "1",
        "LEGIBILITY_LOG_FORMAT": "json",
    }
    with (tmp_path / "learner.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.learner", cwd=REPO, env=env, stdout=log, stderr=log
        )
    try:
        channel = open_channel(f"127.0.0.1:{port}")
        await _wait_serving(channel, 60)
        stub = learner_pb2_grpc.LearnerServiceStub(channel)
        run_id = (await stub.StartRun(K.StartRunRequest(config=tiny_tandem(steps=6, every_steps=2)))).run.run_id
        deadline = time.monotonic() + 60
        while (state := load_state(runs_dir / run_id)) is None or state.step < 2:
            assert time.monotonic() < deadline and proc.returncode is None, (tmp_path / "learner.log").read_text()
            await asyncio.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # no StopRun, no graceful shutdown
        await proc.wait()
        await channel.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    checkpoint = load_state(runs_dir / run_id)
    assert checkpoint is not None and 2 <= checkpoint.step < 6
    assert json.loads((runs_dir / run_id / "run.json").read_text())["state"] == "running"
    seen = len((runs_dir / run_id / "metrics.jsonl").read_text().splitlines())

    learner = await start_learner_server(**dependencies.targets)
    listed = (await learner.stub.ListRuns(K.ListRunsRequest())).runs
    assert [r.run_id for r in listed] == [run_id]
    after = await watch(learner.stub, run_id, after_sequence=seen)
    assert [e.sequence for e in after] == list(range(seen + 1, seen + len(after) + 1))
    assert after[0].kind == K.RUN_EVENT_KIND_STATE and after[0].state == K.RUN_STATE_RUNNING
    resumed = [e for e in after if e.kind == K.RUN_EVENT_KIND_LOG and e.message.startswith("resumed")]
    assert [e.step for e in resumed] == [checkpoint.step]
    train = [e.step for e in after if e.kind == K.RUN_EVENT_KIND_TRAIN_STEP]
    assert train == list(range(checkpoint.step + 1, 7))  # continues after the checkpoint, never re-does step 1
    assert after[-1].state == K.RUN_STATE_SUCCEEDED
    done = (await learner.stub.GetRun(K.GetRunRequest(run_id=run_id))).run
    assert (done.state, done.step) == (K.RUN_STATE_SUCCEEDED, 6)
    full = await watch(learner.stub, run_id)
    assert [e.sequence for e in full] == list(range(1, len(full) + 1))
