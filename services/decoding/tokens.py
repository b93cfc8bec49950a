"""The tokenizer facts both engines need, and the WeakEngine accessors built on them (one copy for both)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DECODE = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}


def context_window(config: Any, tokenizer: Any) -> int:
    """The model's position limit (``max_position_embeddings``; GPT-2's ``n_positions`` maps to it), or the
    tokenizer's ``model_max_length`` when the config has none (rotary models may not); the model is what breaks
    past its positions, while a tokenizer's limit is often a placeholder (10**30) or a training choice."""
    for limit in (getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)):
        if isinstance(limit, int) and 0 < limit < 10**9:
            return limit
    raise ValueError("cannot tell the context window: set max_position_embeddings in the model config")


@dataclass(frozen=True)
class TokenTable:
    vocab_size: int
    context_window: int
    eos_ids: frozenset[int]
    bos_id: int
    pieces: list[str]
    """Each token id's own text, decoded once: boundaries are decided on it at every step."""
    tokenizer_sha256: str
    """:func:`tokenizer_sha256` of the tokenizer, computed once: what ``ModelInfo.tokenizer_sha256`` reports."""

    @classmethod
    def build(cls, tokenizer: Any, config: Any, generation_eos: int | list[int] | None, width: int) -> TokenTable:
        """Facts of ``tokenizer`` for a model with ``config``; ``width`` = rows of the output embedding."""
        vocab_size = min(len(tokenizer), int(config.vocab_size))
        eos_ids = set(
            generation_eos if isinstance(generation_eos, list) else [] if generation_eos is None else [generation_eos]
        )
        if tokenizer.eos_token_id is not None:
            eos_ids.add(tokenizer.eos_token_id)
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if bos is None:
            raise ValueError("the tokenizer has neither a BOS nor an EOS token to start an empty context")
        known = tokenizer.batch_decode([[i] for i in range(vocab_size)], **DECODE)
        return cls(
            vocab_size=vocab_size,
            context_window=context_window(config, tokenizer),
            eos_ids=frozenset(int(i) for i in eos_ids),
            bos_id=int(bos),
            pieces=known + [""] * (width - len(known)),
            tokenizer_sha256=tokenizer_sha256(tokenizer),
        )

    @classmethod
    def of_model(cls, tokenizer: Any, model: Any) -> TokenTable:
        """Facts of a loaded transformers model: its generation EOS ids and the rows of its output embedding."""
        generation_eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        return cls.build(tokenizer, model.config, generation_eos, model.get_output_embeddings().weight.shape[0])

    def pad_id(self, tokenizer: Any) -> int:
        """The tokenizer's pad id, else BOS: its value never matters, padded positions are masked out."""
        return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.bos_id)


def max_text_chars(pieces: Sequence[str], context_window: int) -> int:
    """Most characters a text can have and still fit ``context_window`` tokens: no token decodes to more than the
    longest piece, so a longer text surely does not fit, and is refused without tokenising it (a request of
    megabytes would otherwise be tokenised before its size is known)."""
    return context_window * max(1, max((len(p) for p in pieces), default=1))


class TokenizerAccessors:
    """The WeakEngine Protocol's tokenizer-side members, for an engine holding ``_tokenizer`` and ``_tokens``."""

    _tokenizer: Any
    _tokens: TokenTable

    @property
    def vocab_size(self) -> int:
        return self._tokens.vocab_size

    @property
    def context_window(self) -> int:
        return self._tokens.context_window

    @property
    def max_text_chars(self) -> int:
        """Texts longer than this cannot fit the context window (:func:`max_text_chars`)."""
        return max_text_chars(self._tokens.pieces, self._tokens.context_window)

    @property
    def bos_token_id(self) -> int:
        return self._tokens.bos_id

    @property
    def tokenizer_sha256(self) -> str:
        return self._tokens.tokenizer_sha256

    def encode(self, text: str, *, add_special_tokens: bool) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(token_ids), **DECODE))

    def token_texts(self, token_ids: Sequence[int]) -> list[str]:
        return [self._tokens.pieces[i] for i in token_ids]


def tokenizer_sha256(tokenizer: Any) -> str:
    """sha256 of the vocabulary (every token and its id) and the special tokens: equal hashes, same token ids.

    Two models can hand token ids to each other (tandem rollouts) only when these are equal.
    """
    vocab = sorted(((int(i), str(t)) for t, i in tokenizer.get_vocab().items()), key=lambda pair: pair[0])
    specials = {str(k): str(v) for k, v in sorted(tokenizer.special_tokens_map.items())}
    canonical = json.dumps({"vocab": vocab, "special_tokens": specials}, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()
