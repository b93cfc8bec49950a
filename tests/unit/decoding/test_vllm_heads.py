"""The GPT-2 head-padding patch is chosen only for GPT-2 with heads vLLM's CPU kernels lack.

The kernel list is vLLM 0.32's (``CPUAttentionBackend.get_supported_head_sizes``), stubbed so this test does not
import vLLM; the vLLM integration tests check the real list on the Llama checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from transformers import AutoConfig, LlamaConfig

from services.common.bundled_models import BUNDLED_WEAK
from services.decoding import vllm_heads

CPU_HEAD_SIZES = [32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512]


@pytest.fixture(autouse=True)
def cpu_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_heads, "_cpu_head_sizes", lambda: CPU_HEAD_SIZES)


def test_the_bundled_gpt2_needs_the_patch() -> None:
    config = AutoConfig.from_pretrained(BUNDLED_WEAK)
    assert vllm_heads.head_size(config) == config.n_embd // config.n_head == 16
    assert vllm_heads.needs_padded_heads(config) is True


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_llama_and_qwen2_run_on_vllms_own_kernels(own_checkpoint: Callable[[str, str], Path], family: str) -> None:
    config = AutoConfig.from_pretrained(own_checkpoint(family, "causal"))
    assert vllm_heads.head_size(config) == 64
    assert vllm_heads.needs_padded_heads(config) is False


def test_head_size_without_head_dim_is_hidden_over_heads() -> None:
    config = LlamaConfig(hidden_size=256, num_attention_heads=4, head_dim=None)
    assert vllm_heads.head_size(config) == 64
    assert vllm_heads.needs_padded_heads(config) is False


def test_another_family_with_narrow_heads_is_refused_not_patched() -> None:
    config = LlamaConfig(hidden_size=64, num_attention_heads=4, head_dim=16)
    with pytest.raises(NotImplementedError, match="no kernel for 16-wide heads \\(llama\\); use the hf engine"):
        vllm_heads.needs_padded_heads(config)
