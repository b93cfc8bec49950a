"""Shared by every author of text: boundary rules, token tables, request types, the transformers and vLLM loops."""
