"""``legibility runs report RUN_ID``: fetch a run's report from the artifact store, wherever the learner runs.

The learner stores each run's report (report.md, report.json, plots) as the artifact ``<run_id>-report`` when the
run ends and sets ``Run.report_uri``; this asks the learner for that uri, checks every file against the stored
manifest and copies them out.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from services.common.artifacts import MANIFEST_NAME, ArtifactStore
from services.common.client import open_channel
from services.common.errors import NotFound
from services.common.genproto.legibility.v1 import learner_pb2, learner_pb2_grpc
from services.learner.runs.report import BeforeAfter, format_duration


@dataclass(frozen=True)
class FetchedReport:
    run: learner_pb2.Run
    directory: Path
    content: dict

    @property
    def markdown(self) -> Path:
        return self.directory / "report.md"

    def summary_lines(self) -> list[str]:
        """The key before → after changes, the rounds and where the report is (from report.json)."""
        lines = []
        for m in self.content.get("before_after", {}).values():
            row = BeforeAfter(m["label"], m.get("percent", False), m["before"], m["after"], 0, 0)
            lines.append(f"{row.label} {row.fmt(row.before)} → {row.fmt(row.after)} ({row.fmt_change()})")
        if rounds := self.content.get("rounds"):
            lines.append(f"{len(rounds)} verifier rounds")
        if (wall := self.content.get("wall_seconds")) is not None:
            lines.append(f"wall time {format_duration(wall)}")
        lines.append(f"report: {self.markdown}")
        return lines


async def get_run(learner_target: str, run_id: str, token: str | None = None) -> learner_pb2.Run:
    channel = open_channel(learner_target, token=token)
    try:
        stub = learner_pb2_grpc.LearnerServiceStub(channel)
        return (await stub.GetRun(learner_pb2.GetRunRequest(run_id=run_id))).run
    finally:
        await channel.close()


def copy_report(run: learner_pb2.Run, store: ArtifactStore, out: Path) -> FetchedReport:
    """Copy the run's stored report into ``out`` after checking it against its manifest."""
    if not run.report_uri:
        state = learner_pb2.RunState.Name(run.state)
        raise NotFound(f"run {run.run_id} has no report yet ({state}); a report is stored when the run ends")
    source = store.verify(run.report_uri, store.manifest_sha256(run.report_uri))
    out.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.name != MANIFEST_NAME and path.is_file():
            shutil.copy2(path, out / path.name)
    return FetchedReport(run, out, json.loads((out / "report.json").read_text()))
