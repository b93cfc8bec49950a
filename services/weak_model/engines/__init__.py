"""Engines behind the WeakEngine Protocol, chosen by the ``engine`` setting."""

from __future__ import annotations

from datetime import UTC, datetime

from services.common.weights import VerifiedWeights
from services.weak_model.engine import WeakEngine
from services.weak_model.settings import WeakModelSettings


def load_engine(settings: WeakModelSettings, weights: VerifiedWeights) -> WeakEngine:
    """Load the verified weights into the configured engine (blocking: call it in a thread)."""
    if settings.engine == "hf":
        from services.weak_model.engines.hf import HFEngine, load_pretrained

        model, tokenizer = load_pretrained(weights.path, torch_threads=settings.torch_threads)
        return HFEngine(
            model,
            tokenizer,
            weights.info(datetime.now(UTC)),
            max_batch_size=settings.max_batch_size,
            max_delay_ms=settings.max_delay_ms,
            max_queue_size=settings.max_queue_size,
            torch_threads=settings.torch_threads,
            prefix_cache_mib=settings.prefix_cache_mib,
        )
    if settings.engine == "vllm":
        from services.weak_model.engines.vllm import VLLMEngine

        engine = VLLMEngine(
            weights.path,
            weights.info(datetime.now(UTC)),
            max_batch_size=settings.max_batch_size,
            max_queue_size=settings.max_queue_size,
            seed=settings.vllm_seed,
            gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
            max_restarts=settings.engine_max_restarts,
            restart_backoff_s=settings.engine_restart_backoff_s,
        )
        engine.load()
        return engine
    raise NotImplementedError(f"engine {settings.engine!r} is not available; use --engine hf or vllm")
