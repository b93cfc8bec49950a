"""Verifier service settings: ``LEGIBILITY_*`` environment variables and ``legibility serve verifier`` flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from services.common.bundled_models import BUNDLED_VERIFIER
from services.common.settings import ModelSourceSettings, ServerSettings
from services.tasks.settings import TaskSettings


class VerifierSettings(ServerSettings, ModelSourceSettings, TaskSettings):
    """Serve a verifier (any sequence-classification checkpoint with one label) behind Score, ScoreSteps and
    /get_reward; the task settings say how pairs are rendered (the same verifier input the retraining job uses)."""

    port: int = Field(50051, ge=0, le=65535)
    """gRPC port; 0 picks a free one."""
    metrics_port: int = Field(9091, ge=0, le=65535)
    """Prometheus /metrics HTTP port, separate from gRPC; 0 picks a free one."""
    http_port: int = Field(8080, ge=0, le=65535)
    """OpenRLHF remote reward model HTTP port (``POST /get_reward``); 0 picks a free one."""
    http_enabled: bool = True
    """Serve the OpenRLHF ``/get_reward`` HTTP endpoint beside gRPC."""
    model_path: Path = BUNDLED_VERIFIER
    """Checkpoint directory (transformers format) to serve when registry_version is not set."""
    model_name: str = "verifier"
    """Name reported in ModelInfo and looked up in the registry."""
    max_batch_size: int = Field(64, ge=1)
    """Most (problem, solution prefix) pairs per forward pass; concurrent requests are merged up to this."""
    max_delay_ms: float = Field(0.0, ge=0)
    """hf engine: while a batch keeps the model busy, how long the first waiting pair waits for others to join the
    next one (an idle model takes a batch at once; the vllm engine forms its own batches). 0: the next batch goes as
    soon as a slot is free, with what arrived while the last one ran; measured against 5 ms on 2 cores it gave
    2.1-2.7x the scores/s at 1 client, 1.1-1.5x at 8, the same at 64."""
    max_queue_size: int = Field(1024, ge=1)
    """Most pairs waiting; past it, RESOURCE_EXHAUSTED at once. Also the most pairs one request may hold."""
    torch_threads: int = Field(1, ge=1)
    """torch intra-op threads for the forward passes."""
    engine: Literal["auto", "hf", "vllm"] = "auto"
    """What runs the forward passes: hf (transformers, in this process), vllm (vLLM's pooling runner, its own
    engine-core process), auto (vllm on a GPU when vLLM is installed, else hf). Scores agree within 1e-4."""
    hf_worker: Literal["auto", "thread", "process"] = "auto"
    """Where the hf engine's forward passes run: a child process of their own (``process``: the model never waits for
    the interpreter lock that gRPC's call handling holds, 1.6x the scores/s at 64 clients x 1 item on 2 CPU cores),
    a thread of the service's process (``thread``), or ``auto``: the child on the CPU, the thread on a GPU (a child
    would hold a second CUDA context, two during a hot swap)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the hf engine runs: ``auto`` is the GPU when torch sees one (weights in float32 either way)."""
    vllm_gpu_memory_utilization: float = Field(0.4, gt=0, le=0.95)
    """The vllm engine's share of GPU memory; a hot swap holds two engines until the old one drains, so <= 0.45."""
    http_reward: Literal["verifier", "correctness", "correctness+verifier"] = "verifier"
    """What /get_reward returns as ``rewards``: verifier (the score, a logit), correctness (1 or 0: the task's checker
    against each request label's final answer, or the label itself when it states none; labels required), or
    correctness+verifier (their sum). ``scores`` stays in 0..1: the sigmoid, the correctness, or their mean."""
    watch_registry: bool = False
    """Watch the registry and hot-swap to each newer version of model_name (re-read every reconcile_interval_s)."""
