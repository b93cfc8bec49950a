"""Publish a checkpoint directory: copy it into the artifact store, then compare-and-set its version record."""

from __future__ import annotations

from pathlib import Path

from services.common.artifacts import ArtifactStore
from services.common.registry import VersionConflict, VersionRecord, VersionRegistry


async def publish_checkpoint(
    registry: VersionRegistry,
    store: ArtifactStore,
    name: str,
    checkpoint_dir: Path,
    *,
    version: int | None = None,
    metrics: dict[str, float | int | str] | None = None,
) -> VersionRecord:
    """Store checkpoint_dir as ``name`` at version and publish its record.

    The default version is one above both the registry's current record and the store's highest version: after
    Redis lost its data the store still remembers what was published. The store refuses an existing version
    directory and the registry refuses a version not higher than the current one, so two racing publishers cannot
    both win; the loser's stored copy is removed, so a refused publish leaves nothing behind.
    """
    if version is None:
        current = await registry.current(name)
        version = max(0 if current is None else current.version, store.latest_version(name)) + 1
    stored = store.put_checkpoint(name, version, checkpoint_dir)
    record = VersionRecord(name=name, version=version, uri=stored.uri, sha256=stored.sha256, metrics=metrics or {})
    try:
        return await registry.publish(record)
    except VersionConflict:
        store.remove(stored.uri)
        raise
