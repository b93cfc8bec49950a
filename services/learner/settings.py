"""Learner service settings: ``LEGIBILITY_*`` environment variables and ``legibility serve learner`` flags.

These are the learner's own wiring (where the services, the store and the runs live) and the defaults a
RunConfig falls back to for fields it leaves unset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from services.common.bundled_models import BUNDLED_STRONG, BUNDLED_WEAK
from services.common.settings import ServerSettings, StoreSettings
from services.jobs.verifier_training.queue import DEFAULT_STREAM


class LearnerSettings(ServerSettings, StoreSettings):
    """Run tandem and prover–verifier training runs against the weak-model and verifier services."""

    port: int = Field(50053, ge=0, le=65535)
    """gRPC port; 0 picks a free one."""
    metrics_port: int = Field(9093, ge=0, le=65535)
    """Prometheus /metrics HTTP port, separate from gRPC; 0 picks a free one."""
    weak_model_target: str = "127.0.0.1:50052"
    """host:port of the weak-model service (Continue, LogProbs)."""
    verifier_target: str = "127.0.0.1:50051"
    """host:port of the verifier service (Score, ScoreSteps)."""
    client_token: str | None = None
    """Bearer token the learner sends to the services, when they require one."""
    policy_model_path: Path = BUNDLED_STRONG
    """Initial policy (a causal LM checkpoint) for runs whose RunConfig names none."""
    verifier_init_path: Path = BUNDLED_WEAK
    """LM body a round's verifier starts from with ``round_verifier_start=fresh`` (a fresh score head)."""
    round_verifier_start: Literal["warm", "fresh"] = "warm"
    """Where each game round's verifier training starts: ``warm`` from the previous round's verifier (round 0: from
    the version the registry holds for ``verifier_model_name`` when the round starts, i.e. what the verifier
    service serves, or ``verifier_base_path`` when set), so a round adds to what the verifier knew; ``fresh`` from
    ``verifier_init_path`` with a new score head (the paper's retraining from initialisation, which forgets the
    initial verifier's much larger training set)."""
    verifier_base_samples: list[str] = Field(default_factory=list)
    """Labelled sample sets like the initial verifier's training data (uris or .jsonl files): mixed into every
    round's verifier training as one more round (``base``), so the round data's few prover errors do not make a
    round's verifier forget the rest."""
    verifier_base_path: Path | None = None
    """Round 0's warm start, a classification checkpoint; unset: the registry's current verifier version."""
    runs_dir: Path = Path("runs")
    """Where runs write checkpoints, samples, metrics.jsonl and the report; a run resumes from here."""
    retrain: Literal["in_process", "queue"] = "in_process"
    """How a game round's verifier is retrained: ``in_process`` in a thread of the learner (the embedded
    default), ``queue`` by a request on ``retrain_stream`` that a ``legibility worker train-verifier`` serves
    (the cluster's way: workers scale apart from the learner and survive its restarts)."""
    retrain_stream: str = DEFAULT_STREAM
    """Redis Stream of retraining requests in queue mode (the workers' ``retrain_stream``)."""
    retrain_timeout_s: float = Field(3600.0, gt=0)
    """Queue mode: how long a round waits for a worker's result before the run fails (a dead-lettered request
    fails it at once, with the worker's error)."""
    verifier_model_name: str = "verifier"
    """Registry name of the verifier the game retrains and waits for."""
    version_wait_s: float = Field(120.0, gt=0)
    """How long a round waits for the verifier service to report the newly published version."""
    torch_threads: int = Field(2, ge=1)
    """torch intra-op threads for the policy's forward and backward passes."""
    verifier_train_steps: int = Field(300, ge=1)
    """Optimiser steps of the verifier retraining job each game round."""
    round_sample_problems: int = Field(128, ge=4)
    """Verifier-half problems the prover solves each round (2 helpful + 2 sneaky solutions each) for the verifier."""
    max_concurrent_runs: int = Field(1, ge=1)
    """Runs training at once; more StartRun calls are refused with RESOURCE_EXHAUSTED."""
