"""Fulfil one retraining request: train and publish its target version, or find it already published."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from services.common.artifacts import ArtifactStore
from services.common.registry import VersionRegistry
from services.common.settings import StoreSettings
from services.jobs.verifier_training.job import train_verifier_job
from services.jobs.verifier_training.mixture import NoTrainablePairs
from services.jobs.verifier_training.requests import (
    Device,
    RetrainFailed,
    RetrainRequest,
    RetrainResult,
    job_settings,
)

TRAINING_FILE = "training.json"


def train_for_request(
    request: RetrainRequest,
    store: StoreSettings,
    out_dir: Path,
    torch_threads: int,
    trained_by: str,
    on_step: Callable[[int, float], None] | None = None,
    console: Console | None = None,
    device: Device = "auto",
) -> RetrainResult:
    """Train and publish ``request.target_version`` (blocking: call it in a thread from async code).

    Samples with no correct/incorrect pair are an outcome, not an error: the round keeps its verifier."""
    started = time.perf_counter()
    settings = job_settings(request, store, out_dir, torch_threads, device)
    try:
        trained = train_verifier_job(settings, console, on_step)
    except NoTrainablePairs as error:
        return RetrainResult(
            request_id=request.request_id,
            not_retrained=str(error),
            trained_by=trained_by,
            train_s=time.perf_counter() - started,
        )
    assert trained.record is not None
    return RetrainResult(
        request_id=request.request_id,
        version=trained.record.version,
        metrics=trained.metrics,
        trained_by=trained_by,
        train_s=time.perf_counter() - started,
    )


async def already_published(
    request: RetrainRequest, registry: VersionRegistry, store: ArtifactStore
) -> RetrainResult | None:
    """The request's result if its target version is published already (a worker died between publishing and
    acknowledging); None if it is not. Raises :class:`RetrainFailed` when another writer took the version."""
    current = await registry.current(request.model_name)
    if current is None or current.version < request.target_version:
        return None
    uri = ArtifactStore.uri_for(request.model_name, request.target_version)
    training = store.resolve(uri) / TRAINING_FILE
    try:
        written = json.loads(training.read_text())
    except (OSError, ValueError):
        written = {}
    if written.get("settings", {}).get("request_id") != request.request_id:
        raise RetrainFailed(
            f"{request.model_name} v{request.target_version} was published by another writer "
            f"(the registry is at v{current.version}); this round's verifier has no version to take"
        )
    metrics = {k: float(v) for k, v in written.get("metrics", {}).items() if isinstance(v, int | float)}
    return RetrainResult(request_id=request.request_id, version=request.target_version, metrics=metrics)
