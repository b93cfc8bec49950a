"""Tandem handoffs pass token ids: the policy and the weak model must share one vocabulary, or text turns to garbage.

The weak-model service reports its tokenizer's fingerprint (``ModelInfo.tokenizer_sha256``); the learner compares
it with the policy's before a run trains. We refuse a mismatched pair rather than re-tokenise text at every
handoff: re-tokenising would make the weak model's tokens differ from what the policy conditions on and cost a
decode/encode per segment, and the families people pair (a Qwen2 or Llama policy with a smaller model of the same
family) share a tokenizer.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc

from services.common.errors import InvalidArgument
from services.decoding.tokens import tokenizer_sha256
from services.learner.clients.weak_model import WeakModelClient

log = logging.getLogger(__name__)


def policy_vocabulary(policy_path: Path) -> str:
    """The fingerprint of the policy checkpoint's tokenizer (blocking: loads it)."""
    from transformers import AutoTokenizer  # imported here: the OpenRLHF agent and the CLI import this module

    return tokenizer_sha256(AutoTokenizer.from_pretrained(policy_path))


def check_same_vocabulary(policy_path: Path | str, policy_sha256: str, weak_info: object, field: str) -> None:
    """Raise InvalidArgument naming ``field`` and both checkpoints when the tokenizers differ."""
    weak_sha256 = str(getattr(weak_info, "tokenizer_sha256", ""))
    if weak_sha256 and weak_sha256 != policy_sha256:
        weak_uri = getattr(weak_info, "uri", "") or "the weak-model service's model"
        raise InvalidArgument(
            field,
            f"the policy {policy_path} and the weak model {weak_uri} have different tokenizers (vocabulary sha256 "
            f"{policy_sha256[:12]}… vs {weak_sha256[:12]}…); tandem handoffs pass token ids, so both must share one",
        )


async def weak_model_info(weak: WeakModelClient, timeout_s: float) -> object | None:
    """The weak model's ModelInfo, or None when the service does not answer in time (checked again at run start)."""
    try:
        return await weak.model_info(timeout_s)
    except grpc.aio.AioRpcError as error:
        log.info(
            "weak-model service not reachable at StartRun (%s); the vocabulary is checked at run start", error.code()
        )
        return None
