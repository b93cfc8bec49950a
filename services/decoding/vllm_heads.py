"""vLLM on CPU for heads narrower than its attention kernels: an exact zero-padding patch of GPT-2 attention.

Shared by every vLLM engine in the project (the weak model's, the verifier's, the verifier benchmark's pooling
server): vLLM's worker processes import this module as their worker extension when :data:`PAD_HEADS_ENV` is set;
:func:`prepare_platform` sets it (and the CPU's KV cache size) before an engine starts.
"""

from __future__ import annotations

import os
from typing import Any

# -- heads narrower than the CPU attention kernels support-----------------------------------------------------
#
# vLLM's CPU attention supports head sizes 32, 64, 80, ... only; the bundled toy models have 16-wide heads (64 wide,
# 4 heads) and fail at the first forward pass ("Unsupported CPU attention configuration: head_dim=16"). The fix is
# exact: zero-pad each head's query, key and value to the next supported size, keep the softmax scale
# 1/sqrt(real head size) (zeros add nothing to q.k), and drop the padded value columns after attention. Only the
# attention kernel sees the wider heads; weights, shapes and results are the model's own. It is applied to GPT-2 in
# vLLM's worker processes, which import this module as their worker extension (``worker_extension_cls``) when the
# environment variable below is set. Only where needed (:func:`needs_padded_heads`): Llama and Qwen2 checkpoints
# with 64-wide heads run on vLLM's own kernels, and the patch replaces GPT-2's attention class only, so it leaves
# them alone even when a worker imports it.

PAD_HEADS_ENV = "LEGIBILITY_VLLM_PAD_HEADS"


class PaddedHeadsWorkerExtension:
    """Worker extension whose only job is importing this module in vLLM's worker processes (see above)."""

    @classmethod
    def qualified_name(cls) -> str:
        """What vLLM's ``worker_extension_cls`` takes."""
        return f"{cls.__module__}.{cls.__qualname__}"


def _cpu_head_sizes() -> list[int]:
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    return sorted(CPUAttentionBackend.get_supported_head_sizes())


def head_size(config: Any) -> int:
    """Width of one attention head: ``head_dim`` where the config sets it (Llama, Qwen2), else hidden / heads."""
    explicit = getattr(config, "head_dim", None)
    return int(explicit) if explicit else int(config.hidden_size) // int(config.num_attention_heads)


def needs_padded_heads(config: Any) -> bool:
    """Whether vLLM on CPU needs the GPT-2 patch for this model config: GPT-2 with heads no kernel supports.

    Raises NotImplementedError for another family with such heads: the patch only knows GPT-2's attention.
    """
    size = head_size(config)
    if size in _cpu_head_sizes():
        return False
    if getattr(config, "model_type", "") == "gpt2":
        return True
    raise NotImplementedError(
        f"vLLM's CPU attention has no kernel for {size}-wide heads ({config.model_type}); use the hf engine"
    )


def _supported_head_size(head_dim: int) -> int:
    sizes = _cpu_head_sizes()
    if head_dim in sizes:
        return head_dim
    wider = [size for size in sizes if size > head_dim]
    if not wider:
        raise ValueError(f"no CPU attention kernel for head size {head_dim}")
    return wider[0]


def pad_gpt2_heads() -> None:
    """Make vLLM's GPT-2 attention run heads of unsupported sizes zero-padded to a supported size (exact)."""
    import torch
    from torch import nn
    from torch.nn import functional
    from vllm.model_executor.layers.attention import Attention
    from vllm.model_executor.layers.linear import QKVParallelLinear, RowParallelLinear
    from vllm.model_executor.models import gpt2

    if getattr(gpt2.GPT2Attention, "legibility_padded", False):
        return

    class PaddedHeadsGPT2Attention(nn.Module):
        legibility_padded = True

        def __init__(self, config: Any, cache_config: Any = None, quant_config: Any = None, prefix: str = "") -> None:
            super().__init__()
            world = gpt2.get_tensor_model_parallel_world_size()
            self.hidden_size = config.hidden_size
            total_heads = config.num_attention_heads
            self.num_heads = total_heads // world
            self.head_dim = self.hidden_size // total_heads
            self.padded_dim = _supported_head_size(self.head_dim)
            self.c_attn = QKVParallelLinear(
                self.hidden_size, self.head_dim, total_heads, bias=True, quant_config=quant_config,
                prefix=f"{prefix}.c_attn",
            )  # fmt: skip
            self.c_proj = RowParallelLinear(
                self.hidden_size, self.hidden_size, bias=True, quant_config=quant_config, prefix=f"{prefix}.c_proj"
            )
            self.attn = Attention(
                self.num_heads,
                self.padded_dim,
                scale=self.head_dim**-0.5,
                cache_config=cache_config,
                quant_config=quant_config,
                prefix=f"{prefix}.attn",
            )

        def _pad(self, x: torch.Tensor) -> torch.Tensor:
            if self.padded_dim == self.head_dim:
                return x
            heads = x.reshape(x.shape[0], self.num_heads, self.head_dim)
            return functional.pad(heads, (0, self.padded_dim - self.head_dim)).reshape(x.shape[0], -1)

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            qkv, _ = self.c_attn(hidden_states)
            q, k, v = qkv.chunk(chunks=3, dim=-1)
            out = self.attn(self._pad(q), self._pad(k), self._pad(v))
            if self.padded_dim != self.head_dim:
                out = out.reshape(out.shape[0], self.num_heads, self.padded_dim)[..., : self.head_dim]
                out = out.reshape(out.shape[0], -1)
            out, _ = self.c_proj(out)
            return out

    gpt2.GPT2Attention = PaddedHeadsGPT2Attention  # type: ignore[misc]


if os.environ.get(PAD_HEADS_ENV) == "1":  # a vLLM worker process of this engine (see above)
    pad_gpt2_heads()


def prepare_platform(path: Any, device: str | None = None, pad_heads: bool | None = None) -> tuple[bool, bool]:
    """Before starting a vLLM engine on ``path``: (on CPU, heads padded). Sets the environment its workers read.

    ``device``: None = the platform vLLM detects. ``pad_heads``: None decides from the model config
    (:func:`needs_padded_heads`), True/False force it (to check it is harmless). On CPU the KV cache gets 1 GiB
    (vLLM's default takes far more)."""
    if device is None:
        from vllm.platforms import current_platform

        device = "cpu" if current_platform.is_cpu() else str(current_platform.device_type)
    cpu = device == "cpu"
    if cpu and pad_heads is None:
        from transformers import AutoConfig

        pad_heads = needs_padded_heads(AutoConfig.from_pretrained(path))
    pad = cpu and bool(pad_heads)
    if cpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if pad:
        os.environ[PAD_HEADS_ENV] = "1"  # read by the worker processes vLLM starts
    return cpu, pad
