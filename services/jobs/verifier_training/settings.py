"""Settings of ``legibility train-verifier``: every input from flags or ``LEGIBILITY_*`` env (it runs as a Job)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from services.common.bundled_models import BUNDLED_WEAK
from services.common.settings import LoggingSettings, StoreSettings
from services.tasks.settings import TaskSettings


class TrainVerifierSettings(StoreSettings, LoggingSettings, TaskSettings):
    """Train a verifier from its initialisation on labelled samples of every round so far, then publish it.

    The task settings (``--task``, ``--data``, ``--chat-template``) say how pairs are rendered: the same verifier
    input the verifier service scores, so a trained checkpoint serves with the same task settings."""

    samples: list[str] = Field(min_length=1)
    """Sample sets: artifact:// uris of stored rounds or local .jsonl files (repeat the flag, or a JSON list)."""
    expected_sha256: dict[str, str] = Field(default_factory=dict)
    """Sample sources pinned by content (source → sha256): a set whose sha256 differs is refused, not trained on."""
    base_samples: list[str] = Field(default_factory=list)
    """Sample sets the initial verifier was trained on (uris or .jsonl files): one more round of the mixture, with
    an equal share, so a round's verifier keeps what the initial one knew; reported as ``base``."""
    init_model_path: Path = BUNDLED_WEAK
    """Initialisation: a causal LM checkpoint (GPT-2, Llama, Qwen2, …) whose body the verifier starts from (a fresh
    score head every round); pairs are encoded with its tokenizer (its EOS the read-out) and the task's format."""
    loss: Literal["bradley-terry", "cross-entropy"] = "bradley-terry"
    """Bradley–Terry over same-problem pairs plus centring_lambda·V², or cross-entropy on correctness."""
    centering_lambda: float = Field(0.01, ge=0)
    """Weight of the V² term that centres scores at 0 (Bradley–Terry only)."""
    steps: int = Field(400, ge=1)
    """Optimiser steps."""
    problems_per_batch: int = Field(16, ge=1)
    """Problems per batch; rounds are drawn uniformly, so each round gets an equal share."""
    solutions_per_problem: int = Field(4, ge=2)
    """Solutions per problem in a batch, half correct and half incorrect (an even number)."""
    learning_rate: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    held_out_fraction: float = Field(0.1, gt=0, lt=1)
    """Share of problems (by hash of the text) kept out of training for the published metrics."""
    seed: int = 0
    """Seeds the score head, the batch draws and torch: same inputs and seed, same weights."""
    torch_threads: int = Field(2, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where training runs: ``auto`` is the GPU when torch sees one (a worker in the gpu overlay), else the CPU."""
    out_dir: Path | None = None
    """Where the checkpoint is written; default runs/train-verifier/<model_name>-<UTC time>."""
    publish: bool = True
    """Store the checkpoint in the artifact store and publish it in the registry as model_name."""
    model_name: str = "verifier"
    """Registry name to publish under."""
    version: int | None = Field(None, ge=1)
    """Version to publish; default current + 1 (refused if not higher than the current one)."""
    request_id: str = ""
    """The retraining request this job serves (``<run_id>:round<N>``), written into training.json so a worker that
    finds its target version published can tell its own earlier publish from another writer's."""

    def torch_device(self) -> str:
        if self.device == "auto":
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    @field_validator("solutions_per_problem")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("must be even: half correct, half incorrect")
        return value
