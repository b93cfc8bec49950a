"""A verifier retraining request and its result: what the learner asks for and what a trainer answers.

The same request drives both ways of retraining (``LearnerSettings.retrain``): ``in_process`` runs it in the
learner, ``queue`` puts it on a Redis Stream for ``legibility worker train-verifier``. Both turn it into the same
:class:`TrainVerifierSettings` with :func:`job_settings`, so a round trains the same verifier either way.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.common.artifacts import SCHEME, ArtifactStore
from services.common.errors import ArtifactError
from services.common.settings import StoreSettings
from services.jobs.verifier_training.settings import TrainVerifierSettings

Device = Literal["auto", "cpu", "cuda"]


class PinnedSource(BaseModel):
    """An input pinned by content: an ``artifact://`` uri and its manifest sha256, or a path every trainer sees
    (a bundled model, a shared volume) with the sha256 of the file (empty for a directory)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str = Field(min_length=1)
    sha256: str = ""


class TrainingOptions(BaseModel):
    """The run's choices for its verifier training (the rest comes from the trainer's own settings)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    loss: Literal["bradley-terry", "cross-entropy"] = "bradley-terry"
    centering_lambda: float = Field(0.01, ge=0)
    steps: int = Field(400, ge=1)
    seed: int = 0
    held_out_fraction: float = Field(0.1, gt=0, lt=1)
    task: str = "toy"
    data: Path | None = None
    chat_template: str = "auto"


class RetrainRequest(BaseModel):
    """Train round ``round``'s verifier of run ``run_id`` and publish it as ``model_name`` v``target_version``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str = Field(min_length=1)
    """``<run_id>:round<N>``: one request per round, however often the learner asks."""
    run_id: str = Field(min_length=1)
    round: int = Field(ge=0)
    model_name: str = Field(min_length=1)
    target_version: int = Field(ge=1)
    """The version the learner expects: the registry's compare-and-set makes it the only one this round gets."""
    samples: list[PinnedSource] = Field(min_length=1)
    base_samples: list[PinnedSource] = Field(default_factory=list)
    init_model: PinnedSource
    training: TrainingOptions

    @staticmethod
    def id_for(run_id: str, round_: int) -> str:
        return f"{run_id}:round{round_}"


class RetrainResult(BaseModel):
    """A request's outcome: the published version and its held-out metrics, or why the round kept its verifier."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    version: int | None = None
    """None when the samples gave nothing to train on (``not_retrained`` says why)."""
    metrics: dict[str, float] = Field(default_factory=dict)
    not_retrained: str = ""
    trained_by: str = ""
    """The worker (or ``in_process``) that trained it."""
    train_s: float = 0.0


class RetrainFailed(RuntimeError):
    """A request was given up (``max_attempts`` failures, or the wait timed out); the message is the trainer's error."""


def pin_checkpoint(store: ArtifactStore, source: str | Path) -> PinnedSource:
    """A checkpoint to start from: an ``artifact://`` version pinned by its manifest, or a local directory."""
    source = str(source)
    if source.startswith(SCHEME):
        return PinnedSource(uri=source, sha256=store.manifest_sha256(source))
    return PinnedSource(uri=source)


def pin_samples(store: ArtifactStore, source: str) -> PinnedSource:
    """A sample set pinned by content: a stored round (its manifest sha256) or a .jsonl file (its sha256)."""
    if source.startswith(SCHEME):
        return PinnedSource(uri=source, sha256=store.manifest_sha256(source))
    path = Path(source)
    if not path.is_file():
        raise ArtifactError(f"samples: {source} is neither an {SCHEME} uri nor a readable file")
    return PinnedSource(uri=source, sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def resolve_checkpoint(store: ArtifactStore, source: PinnedSource) -> Path:
    """The local directory of a pinned checkpoint, verified file by file when it is an artifact."""
    if source.uri.startswith(SCHEME):
        return store.verify(source.uri, source.sha256)
    path = Path(source.uri)
    if not path.is_dir():
        raise ArtifactError(f"init_model: {source.uri} is not a checkpoint directory on this trainer")
    return path


def job_settings(
    request: RetrainRequest, store: StoreSettings, out_dir: Path, torch_threads: int, device: Device = "auto"
) -> TrainVerifierSettings:
    """The training job a request asks for, with this trainer's store, output directory and threads."""
    training = request.training
    return TrainVerifierSettings(
        samples=[s.uri for s in request.samples],
        expected_sha256={s.uri: s.sha256 for s in [*request.samples, *request.base_samples] if s.sha256},
        base_samples=[s.uri for s in request.base_samples],
        init_model_path=resolve_checkpoint(ArtifactStore(store.artifact_root), request.init_model),
        out_dir=out_dir,
        loss=training.loss,
        centering_lambda=training.centering_lambda,
        steps=training.steps,
        seed=training.seed,
        held_out_fraction=training.held_out_fraction,
        task=training.task,
        data=training.data,
        chat_template=training.chat_template,
        model_name=request.model_name,
        version=request.target_version,
        request_id=request.request_id,
        redis_url=store.redis_url,
        redis_password=store.redis_password,
        artifact_root=store.artifact_root,
        torch_threads=torch_threads,
        device=device,
    )
