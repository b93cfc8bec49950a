"""`legibility demo`: the end-to-end run on one machine.

Today it exercises the foundation every service stands on: a real local Redis, the version registry and the
artifact store, as a retraining job and a serving replica use them (publish → watch → verify). The service
issues extend this into the full tandem + prover–verifier run.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from services.common.artifacts import ArtifactStore
from services.common.errors import ArtifactError, VersionConflict
from services.common.publish import publish_checkpoint
from services.common.redis_launcher import EmbeddedRedis
from services.common.registry import VersionRecord, VersionRegistry, connect

MODEL = "verifier"
console = Console()


@dataclass
class PublishedVersion:
    version: int
    uri: str
    sha256: str
    watcher_latency_ms: float
    verified: bool


@dataclass
class DemoReport:
    started_at: str
    redis_url: str
    artifact_root: str
    versions: list[PublishedVersion]
    refused_stale_publish: str
    refused_tampered_artifact: str
    refused_escaping_uri: str


def _write_checkpoint(folder: Path, version: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "demo", "version": version}))
    (folder / "round.txt").write_text(f"checkpoint of round {version}\n")
    return folder


async def _publish_rounds(
    registry: VersionRegistry, store: ArtifactStore, scratch: Path, rounds: int, progress: Progress
) -> list[PublishedVersion]:
    seen: asyncio.Queue[tuple[VersionRecord, float]] = asyncio.Queue()

    async def watch() -> None:
        async for record in registry.watch(MODEL, reconcile_interval_s=1.0):
            seen.put_nowait((record, time.perf_counter()))

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.2)  # let the watcher subscribe before the first publish
    task = progress.add_task("publish → watch → verify", total=rounds)
    published = []
    try:
        for round_index in range(1, rounds + 1):
            started = time.perf_counter()
            record = await publish_checkpoint(
                registry,
                store,
                MODEL,
                _write_checkpoint(scratch / f"round{round_index}", round_index),
                metrics={"round": round_index},
            )
            while True:
                observed, at = await asyncio.wait_for(seen.get(), timeout=10)
                if observed.version == record.version:
                    break
            store.verify(record.uri, record.sha256)
            published.append(PublishedVersion(record.version, record.uri, record.sha256, (at - started) * 1000, True))
            progress.advance(task)
    finally:
        watcher.cancel()
    return published


def _refusals(store: ArtifactStore, record: PublishedVersion) -> tuple[str, str]:
    tampered = store.resolve(record.uri) / "round.txt"
    tampered.chmod(0o644)
    original = tampered.read_text()
    tampered.write_text(original + "tampered\n")
    try:
        store.verify(record.uri, record.sha256)
        tamper_message = "NOT REFUSED"
    except ArtifactError as error:
        tamper_message = str(error)
    finally:
        tampered.write_text(original)
    try:
        store.resolve("artifact://../../etc")
        escape_message = "NOT REFUSED"
    except ArtifactError as error:
        escape_message = str(error)
    return tamper_message, escape_message


async def run_demo(out: Path, redis_url: str | None, rounds: int = 3) -> Path:
    """Run the demo and return the folder holding report.json and report.md."""
    started = datetime.now(UTC)
    run_dir = out / f"demo-{started:%Y%m%d-%H%M%S}"
    run_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack, Progress(console=console, transient=False) as progress:
        if redis_url is None:
            console.print("starting a local redis-server on a free loopback port")
            redis_url = stack.enter_context(EmbeddedRedis()).url
        client = connect(redis_url)
        registry = VersionRegistry(client)
        store = ArtifactStore(run_dir / "artifacts")
        try:
            versions = await _publish_rounds(registry, store, run_dir / "scratch", rounds, progress)
            first = versions[0]
            try:  # a late retraining job re-publishing round 1 after round 3 is out
                await registry.publish(
                    VersionRecord(name=MODEL, version=first.version, uri=first.uri, sha256=first.sha256)
                )
                stale_message = "NOT REFUSED"
            except VersionConflict as error:
                stale_message = str(error)
        finally:
            await client.aclose()
        tamper_message, escape_message = _refusals(store, versions[0])
    report = DemoReport(
        started.isoformat(),
        redis_url,
        str(store.root),
        versions,
        stale_message,
        tamper_message,
        escape_message,
    )
    _write_report(run_dir, report)
    return run_dir


def _write_report(run_dir: Path, report: DemoReport) -> None:
    (run_dir / "report.json").write_text(json.dumps(asdict(report), indent=2))
    table = Table(title="Version registry round trip")
    for column in ("version", "uri", "sha256", "seen by watcher after", "verified"):
        table.add_column(column)
    lines = [
        "# Demo report",
        "",
        f"Started {report.started_at}; Redis at `{report.redis_url}`; artifacts under `{report.artifact_root}`.",
        "",
        "| version | uri | sha256 | seen by watcher after (ms) | verified |",
        "|---|---|---|---|---|",
    ]
    for v in report.versions:
        table.add_row(str(v.version), v.uri, v.sha256[:12], f"{v.watcher_latency_ms:.1f} ms", str(v.verified))
        lines.append(f"| {v.version} | {v.uri} | {v.sha256[:12]} | {v.watcher_latency_ms:.1f} | {v.verified} |")
    refusals = {
        "publish of a version not higher than the current one": report.refused_stale_publish,
        "artifact changed after publishing": report.refused_tampered_artifact,
        "artifact uri escaping the store": report.refused_escaping_uri,
    }
    lines += ["", "## Refused, as they must be", ""]
    lines += [f"- {what}: {message}" for what, message in refusals.items()]
    (run_dir / "report.md").write_text("\n".join(lines) + "\n")
    console.print(table)
    for what, message in refusals.items():
        console.print(f"[bold]refused[/bold] {what}: {message}")
    console.print(f"report: {run_dir / 'report.md'}")
