"""Small Llama and Qwen2 checkpoints made here, with no download: what "your own model" looks like in tests.

Built by :mod:`services.tools.random_checkpoint` at its ``tiny`` shape (the same builder makes GPU-sized ones).
"""

from services.tools.random_checkpoint import CONTEXT_WINDOW, Family, Kind, build_checkpoint, train_tokenizer

__all__ = ["CONTEXT_WINDOW", "Family", "Kind", "build_checkpoint", "train_tokenizer"]
