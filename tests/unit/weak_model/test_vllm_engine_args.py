"""How the weak model's vllm engine configures vLLM: prefix caching that can hit on CPU, and a GPU share to set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from services.common.bundled_models import BUNDLED_WEAK
from services.weak_model import engines
from services.weak_model.engines import vllm as vllm_engine
from services.weak_model.settings import WeakModelSettings

pytest.importorskip("vllm")


def test_cpu_engines_cache_prefixes_in_32_token_blocks() -> None:
    args = vllm_engine.engine_args(BUNDLED_WEAK, context_window=192, seed=0, max_num_seqs=4)
    # vLLM's CPU default (128-token blocks) never filled a block with a toy prompt plus a few words.
    assert (args.enable_prefix_caching, args.block_size) == (True, 32)
    assert args.gpu_memory_utilization == 0.9  # vLLM's own default unless asked


def test_the_gpu_share_setting_reaches_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    class Recorder:
        def __init__(self, path: Path, weights: Any, **kwargs: Any) -> None:
            seen.update(kwargs)

        def load(self) -> None:
            pass

    class Weights:
        path = BUNDLED_WEAK

        def info(self, loaded_at: Any) -> None:
            return None

    monkeypatch.setattr(vllm_engine, "VLLMEngine", Recorder)
    settings = WeakModelSettings(engine="vllm", vllm_gpu_memory_utilization=0.35)
    engines.load_engine(settings, Weights())  # type: ignore[arg-type]
    assert seen["gpu_memory_utilization"] == 0.35
    args = vllm_engine.engine_args(
        BUNDLED_WEAK, context_window=192, seed=0, max_num_seqs=4, gpu_memory_utilization=0.35
    )
    assert args.gpu_memory_utilization == 0.35
    for bad in (0, 1.5):
        with pytest.raises(ValidationError, match="vllm_gpu_memory_utilization"):
            WeakModelSettings(vllm_gpu_memory_utilization=bad)
