"""Hot swap: watch the registry and replace the served verifier with each newer version, off the request path.

For each new record: verify the artifact against the record's sha256, load it and start its batcher, warm it
up with one forward pass, then attach it (new calls use it at once), and close the previous model once its
in-flight calls have finished. A version that fails verification, loading or warm-up is refused (logged and
counted in MODEL_REFUSED_VERSIONS) and the old one keeps serving; the watcher goes on waiting for a newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from services.common.artifacts import ArtifactStore
from services.common.errors import ArtifactError
from services.common.metrics import MODEL_REFUSED_VERSIONS, MODEL_SWAPS, MODEL_VERSION, REGISTRY_VERSION
from services.common.registry import VersionRecord, VersionRegistry
from services.common.tasks import cancel_and_wait
from services.common.weights import VerifiedWeights
from services.verifier.model import VerifierModel
from services.verifier.service import VerifierServicer
from services.verifier.settings import VerifierSettings

log = logging.getLogger(__name__)

Loader = Callable[[VerifiedWeights], Awaitable[VerifierModel]]
"""Loads verified weights into a started VerifierModel (``app.load_model`` bound to the settings)."""

WARMUP_PAIR = ("What is 1 + 1?", "1+1=2.\n#### 2")


class VersionWatcher:
    """A background task swapping ``servicer``'s model to every newer registry version of settings.model_name."""

    def __init__(self, settings: VerifierSettings, servicer: VerifierServicer, load: Loader) -> None:
        self._settings = settings
        self._servicer = servicer
        self._load = load
        self._store = ArtifactStore(settings.artifact_root)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start watching after the version served now."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"version-watcher:{self._settings.model_name}")
            self._task.add_done_callback(self._report_crash)

    async def stop(self) -> None:
        """Cancel the watch (and any swap in progress: a half-loaded model is closed, the served one kept)."""
        task, self._task = self._task, None
        if task is None:
            return
        await cancel_and_wait(task, swallow_errors=True)  # a crash was logged when it happened

    def _report_crash(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("version watcher for %s stopped: no more hot swaps", self._settings.model_name, exc_info=exc)

    async def _run(self) -> None:
        name = self._settings.model_name
        served = self._servicer.model.weights.version
        client = self._settings.redis_client()
        try:
            watch = VersionRegistry(client).watch(
                name, reconcile_interval_s=self._settings.reconcile_interval_s, after_version=served
            )
            async with contextlib.aclosing(watch) as records:
                async for record in records:
                    await self.apply(record)
        finally:
            await client.aclose()

    async def apply(self, record: VersionRecord) -> bool:
        """Swap to ``record`` if it verifies, loads and warms up; else count it refused. True when swapped."""
        REGISTRY_VERSION.labels(record.name).set(record.version)
        current = self._servicer.model.weights.version
        if record.version <= current:
            log.debug("%s version %d is not newer than %d served; ignored", record.name, record.version, current)
            return False
        try:
            path = await asyncio.to_thread(self._store.verify, record.uri, record.sha256)
        except ArtifactError as exc:
            return self._refuse(record, "artifact", exc)
        weights = VerifiedWeights(path, record.name, record.version, record.sha256, record.uri)
        try:
            model = await self._load(weights)
        except Exception as exc:  # any load failure refuses the version, never the replica
            return self._refuse(record, "load", exc)
        try:
            await model.score([WARMUP_PAIR])  # through the new model's own batcher and engine
        except BaseException as exc:
            await model.close(grace_s=0)
            if not isinstance(exc, Exception):
                raise
            return self._refuse(record, "warmup", exc)
        previous = self._servicer.attach(model)
        MODEL_VERSION.labels(record.name).set(record.version)
        MODEL_SWAPS.labels(record.name).inc()
        log.info("%s swapped to version %d (%s, sha256 %s)", record.name, record.version, record.uri, record.sha256)
        if previous is not None:
            try:
                await previous.close(self._settings.grace_period_s)
            except asyncio.CancelledError:
                # Stopped mid-drain: the old model's calls in flight still get their grace before it stops.
                await previous.close(self._settings.grace_period_s)
                raise
        return True

    def _refuse(self, record: VersionRecord, reason: str, exc: Exception) -> bool:
        served = self._servicer.model.weights.version
        log.error(
            "refusing %s version %d (%s): %s: %s; still serving version %d",
            record.name,
            record.version,
            reason,
            type(exc).__name__,
            exc,
            served,
        )
        MODEL_REFUSED_VERSIONS.labels(record.name, reason).inc()
        return False
