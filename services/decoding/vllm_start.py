"""Starting a vLLM ``AsyncLLM``: the one place every engine of ours (weak model, verifier, the benches) starts one."""

from __future__ import annotations

from typing import Any

from services.common.reaper import guard_descendants


def start_async_llm(args: Any) -> Any:
    """``AsyncLLM.from_engine_args(args)`` (blocking: starts the engine-core process, loads the weights), with a
    reaper that stops the engine's processes if this one is killed (see :mod:`services.common.reaper`)."""
    from vllm.v1.engine.async_llm import AsyncLLM

    guard_descendants()
    return AsyncLLM.from_engine_args(args)
