"""A run's products as artifacts: the report (Markdown, JSON, plots) stored where every client can fetch it."""

from __future__ import annotations

import dataclasses
import shutil
import time

from services.common.artifacts import ArtifactStore
from services.learner.runs.records import RunRecord, RunStatus
from services.learner.runs.report import write_report

REPORT_DIR = "report"


def store_report(store: ArtifactStore, record: RunRecord, status: RunStatus, name: str) -> str:
    """Write the run's report into ``<run dir>/report`` and store it as the next version of artifact ``name``
    (a run resumed after a stop gets a new version); returns its ``artifact://`` uri."""
    out = record.dir / REPORT_DIR
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    options = dataclasses.asdict(record.run.options) if record.run is not None else None
    wall = time.time() - record.started_at if record.started_at is not None else None
    title = f"Run {record.run_id}" + (f": {record.config['name']}" if record.config.get("name") else "")
    if status != RunStatus.SUCCEEDED:
        title += f" ({status.value}; partial report)"
    write_report(record.dir, title, options, wall, out_dir=out)
    return store.put_checkpoint(name, store.latest_version(name) + 1, out).uri
