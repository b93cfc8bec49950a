"""Weak-model service settings: ``LEGIBILITY_*`` environment variables and ``legibility serve weak-model`` flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from services.common.bundled_models import BUNDLED_WEAK
from services.common.settings import ModelSourceSettings, ServerSettings


class WeakModelSettings(ServerSettings, ModelSourceSettings):
    """Serve a frozen weak LM behind Continue and LogProbs."""

    port: int = Field(50052, ge=0, le=65535)
    """gRPC port; 0 picks a free one."""
    metrics_port: int = Field(9092, ge=0, le=65535)
    """Prometheus /metrics HTTP port, separate from gRPC; 0 picks a free one."""
    engine: Literal["hf", "vllm"] = "hf"
    """Inference engine: hf (transformers, batched KV-cached generation) or vllm (vLLM's AsyncLLM)."""
    model_path: Path = BUNDLED_WEAK
    """Checkpoint directory (transformers format) to serve when registry_version is not set."""
    model_name: str = "weak"
    """Name reported in ModelInfo and looked up in the registry."""
    max_new_tokens_cap: int = Field(256, ge=1)
    """Largest max_new_tokens a Continue item may ask for."""
    max_batch_size: int = Field(32, ge=1)
    """Most items per model call; concurrent requests are merged up to this (vllm: most running sequences)."""
    max_delay_ms: float = Field(0.0, ge=0)
    """hf: how long an idle engine's first Continue item waits for others to start with it, and how long LogProbs
    items gather while a batch runs. 0 (the default): a lone call is never held back; concurrent ones join the
    running batch at its next step (alternated runs on 2 cores: 1.2x the tokens/s of 5 ms at one client, the same
    at 64)."""
    max_queue_size: int = Field(256, ge=1)
    """Most items waiting per RPC kind; past it, RESOURCE_EXHAUSTED at once. Also the most items per request."""
    torch_threads: int = Field(1, ge=1)
    """torch intra-op threads (the transformers engine)."""
    prefix_cache_mib: int = Field(256, ge=0)
    """The transformers engine's prefix KV cache: a request whose prefix starts with an earlier one's text feeds only
    the rest (a tandem rollout resends its whole text each segment); least recently used entries go beyond this
    size; 0 turns it off. Its hit rate is exported as legibility_prefix_cache_* metrics. (vLLM has its own.)"""
    vllm_gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    """vllm on a GPU: the share of its memory the engine may take (weights and KV cache; vLLM's default 0.9). Lower
    it to share one GPU with another engine (the verifier's, a policy's); ignored on CPU."""
    vllm_seed: int = Field(0, ge=0)
    """vLLM engine seed (unseeded sampling); per-item seeds still give reproducible items."""
    engine_max_restarts: int = Field(3, ge=0)
    """vllm: restarts in a row after the engine core dies (health NOT_SERVING meanwhile); past them the service
    exits non-zero for the orchestrator to restart it. 0 = exit at the first death."""
    engine_restart_backoff_s: float = Field(2.0, ge=0)
    """vllm: wait before the first restart, doubled for each further one."""
