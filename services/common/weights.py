"""Find and verify a service's weights: a local path, or a registry version checked against the artifact store.

The weights are resolved and hashed once at load, the sha256 is reported in every response (``ModelInfo``), and
a mismatch with ``expected_sha256`` (or with the registry record) refuses them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from services.common.artifacts import ArtifactStore, directory_sha256
from services.common.errors import ArtifactError
from services.common.genproto.legibility.v1 import common_pb2
from services.common.registry import VersionRegistry
from services.common.settings import ModelSourceSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightsInfo:
    """Which weights a model serves (the service turns this into a ``ModelInfo``)."""

    name: str
    version: int  # registry version; 0 for a plain path
    sha256: str  # manifest sha256 (services.common.artifacts.directory_sha256)
    loaded_at: datetime
    uri: str  # artifact://name/v000002 or a local path
    tokenizer_sha256: str = ""  # services.decoding.tokens.tokenizer_sha256; "" where the service has not set it

    def message(self) -> common_pb2.ModelInfo:
        """The ``ModelInfo`` every inference response carries (a fresh message; the caller may change it)."""
        return common_pb2.ModelInfo(
            name=self.name,
            version=self.version,
            sha256=self.sha256,
            loaded_at=self._loaded_at_message,
            uri=self.uri,
            tokenizer_sha256=self.tokenizer_sha256,
        )

    @functools.cached_property
    def _loaded_at_message(self) -> Timestamp:
        """Converted once: FromDatetime was a measurable share of a one-item Score call (the message copies it)."""
        loaded_at = Timestamp()
        loaded_at.FromDatetime(self.loaded_at)
        return loaded_at


@dataclass(frozen=True)
class VerifiedWeights:
    """A checkpoint directory whose manifest sha256 has been checked."""

    path: Path
    name: str
    version: int  # 0 for a plain path
    sha256: str
    uri: str

    def info(self, loaded_at: datetime) -> WeightsInfo:
        """What responses report once these weights are loaded."""
        return WeightsInfo(self.name, self.version, self.sha256, loaded_at, self.uri)


async def verified_weights(settings: ModelSourceSettings) -> VerifiedWeights:
    """The weights settings point at, verified; raises ArtifactError (refuse to start) on any mismatch."""
    if settings.registry_version is None:
        weights = await _from_path(settings)
    else:
        weights = await _from_registry(settings, settings.registry_version)
    expected = settings.expected_sha256
    if expected is not None and weights.sha256 != expected.lower():
        raise ArtifactError(f"{weights.uri}: sha256 {weights.sha256} != expected_sha256 {expected.lower()}")
    log.info("weights %s v%d at %s verified: sha256 %s", weights.name, weights.version, weights.path, weights.sha256)
    return weights


async def _from_path(settings: ModelSourceSettings) -> VerifiedWeights:
    path = settings.model_path.resolve()
    sha256 = await asyncio.to_thread(directory_sha256, path)
    return VerifiedWeights(path, settings.model_name, 0, sha256, str(path))


async def _from_registry(settings: ModelSourceSettings, version: int) -> VerifiedWeights:
    """Version 0 or the current version: the record's uri and sha256. An older one needs expected_sha256."""
    client = settings.redis_client()
    try:
        record = await VersionRegistry(client).current(settings.model_name)
    finally:
        await client.aclose()
    store = ArtifactStore(settings.artifact_root)
    if record is not None and version in (0, record.version):
        version, uri, sha256 = record.version, record.uri, record.sha256
    elif version > 0 and settings.expected_sha256 is not None:
        # Redis keeps only the current record; an older version is pinned by the operator's hash instead.
        uri, sha256 = store.uri_for(settings.model_name, version), settings.expected_sha256.lower()
    else:
        current = "no version" if record is None else f"version {record.version}"
        wanted = f"version {version} was asked for" if version else "any version was asked for"
        raise ArtifactError(
            f"the registry holds {current} of {settings.model_name!r}; {wanted} "
            "(an older version loads with its expected_sha256 set)"
        )
    path = await asyncio.to_thread(store.verify, uri, sha256)
    return VerifiedWeights(path, settings.model_name, version, sha256, uri)
