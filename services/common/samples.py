"""Labelled solutions exchanged between the learner (writer) and the verifier retraining job (reader).

A sample set is a directory holding ``samples.jsonl`` (one :class:`LabelledSample` per line). The learner stores
each round's set in the artifact store as ``<dataset>`` version ``round + 1`` (versions start at 1, rounds at 0),
so a set is immutable and pinned by its manifest sha256 like any checkpoint. The training job also reads plain
``.jsonl`` files, for data made outside a run.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.common.artifacts import SCHEME, ArtifactStore, StoredArtifact
from services.common.errors import ArtifactError, InvalidArgument

SAMPLES_FILE = "samples.jsonl"


BASE_ROUND = -1
"""The round of the initial verifier's training data when a retraining job mixes it in (``base_samples``)."""


class LabelledSample(BaseModel):
    """One solution to one problem, labelled by the task's checker."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    problem: str = Field(min_length=1)
    solution: str
    correct: bool
    role: Literal["helpful", "sneaky", "none"] = "none"
    """The prover role stated in the prompt; ``none`` outside the game."""
    round: int = Field(0, ge=BASE_ROUND)
    """Game round that produced it (0 = the initial prover; −1 = the initial verifier's own training data)."""
    source: str = ""
    """Who wrote it, e.g. ``policy@step40`` or ``weak``; informational."""

    @property
    def problem_id(self) -> str:
        """A stable id of the problem text (groups solutions to the same problem)."""
        return hashlib.sha256(self.problem.encode()).hexdigest()[:16]


def write_jsonl(path: Path, samples: Iterable[LabelledSample]) -> int:
    """Write samples one JSON object per line; returns how many."""
    count = 0
    with path.open("w", encoding="utf-8") as fh:
        for sample in samples:
            fh.write(sample.model_dump_json() + "\n")
            count += 1
    return count


def read_jsonl(path: Path) -> list[LabelledSample]:
    """Read a samples file; a malformed line is an InvalidArgument naming the file and line."""
    samples = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                samples.append(LabelledSample.model_validate_json(line))
            except ValidationError as error:
                raise InvalidArgument(f"{path}:{number}", str(error).splitlines()[0]) from error
    return samples


def put_samples(store: ArtifactStore, dataset: str, round_: int, samples: Sequence[LabelledSample]) -> StoredArtifact:
    """Store one round's samples as ``dataset`` version ``round_ + 1`` (refused if that round is already stored)."""
    with tempfile.TemporaryDirectory(prefix="samples-") as tmp:
        write_jsonl(Path(tmp) / SAMPLES_FILE, samples)
        return store.put_checkpoint(dataset, round_ + 1, Path(tmp))


def samples_uri(dataset: str, round_: int) -> str:
    """Where round ``round_`` of ``dataset`` is stored."""
    return ArtifactStore.uri_for(dataset, round_ + 1)


def load_samples(store: ArtifactStore, source: str) -> tuple[list[LabelledSample], str]:
    """Samples from an ``artifact://`` set (verified against its own manifest) or a local ``.jsonl`` file.

    Returns the samples and the sha256 that pins them (manifest sha256, or the file's sha256).
    """
    if source.startswith(SCHEME):
        store.resolve(source)  # a malformed or escaping uri is refused as such
        try:
            sha256 = store.manifest_sha256(source)
        except ArtifactError as error:
            raise ArtifactError(f"{source}: no sample set stored there") from error
        path = store.verify(source, sha256)  # every file matches the manifest: nothing changed since it was stored
        return read_jsonl(path / SAMPLES_FILE), sha256
    path = Path(source)
    if not path.is_file():
        raise InvalidArgument("samples", f"{source}: neither an {SCHEME} uri nor a readable file")
    return read_jsonl(path), hashlib.sha256(path.read_bytes()).hexdigest()
