"""The GPU benches' random checkpoint has Qwen2-0.5B's body: its layers, widths and heads (built on the meta device)."""

from __future__ import annotations

import torch
from transformers import Qwen2ForCausalLM

from services.tools.random_checkpoint import _config, train_tokenizer


def test_the_qwen2_0_5b_shape_has_the_real_body_and_a_small_vocabulary() -> None:
    tokenizer = train_tokenizer("qwen2")
    config = _config("qwen2", tokenizer, "causal", "qwen2-0.5b")
    shape = (config.num_hidden_layers, config.hidden_size, config.intermediate_size)
    assert shape == (24, 896, 4864)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (14, 2, 64)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    body = sum(p.numel() for name, p in model.named_parameters() if ".layers." in name)
    # 24 x (attention 2x896x896 + 2x896x128 with biases, MLP 3x896x4864, two norms): Qwen2-0.5B's 358 M.
    assert body == 24 * (2 * 896 * 896 + 2 * 896 * 128 + 896 + 2 * 128 + 3 * 896 * 4864 + 2 * 896)
    assert config.vocab_size == len(tokenizer) < 1000
