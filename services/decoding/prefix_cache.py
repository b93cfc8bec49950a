"""A bounded cache of KV states keyed by token prefix, for callers that resend a growing prefix.

A tandem rollout sends each author the whole text so far at every segment: without a cache the author recomputes
the prefix each time (with word handoffs the policy's prefill was 3× its decoding in a profile of
``legibility bench tandem``). After a segment, :func:`~services.decoding.hf_loop.generate` stores each row's KV
states under the token ids it fed; the next request whose prefix starts with those ids feeds only the rest.

Lookup is by token prefix, as vLLM's prefix caching does: the ids are hashed in blocks of :data:`BLOCK` tokens, so
the longest cached prefix is found without scanning entries, then extended token by token within the block. Entries
are evicted least recently used beyond ``max_bytes`` or ``max_entries``; an entry a longer one extends is dropped
when that one is stored. KV states depend on the weights: whoever changes them calls :meth:`PrefixCache.clear`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

BLOCK = 16
MiB = 1024 * 1024

KV = list[tuple[torch.Tensor, torch.Tensor]]
"""Per layer, keys and values of one sequence: ``[heads, tokens, head_dim]`` each."""


@dataclass
class CachedPrefix:
    ids: tuple[int, ...]
    layers: KV
    nbytes: int


@dataclass
class CacheStats:
    lookups: int = 0
    hits: int = 0
    reused_tokens: int = 0
    prefix_tokens: int = 0
    """Tokens of every looked-up prefix: reused_tokens / prefix_tokens is the share not recomputed."""
    evictions: int = 0

    def since(self, earlier: CacheStats) -> CacheStats:
        """What happened between ``earlier`` (a copy of these stats) and now."""
        return CacheStats(
            self.lookups - earlier.lookups,
            self.hits - earlier.hits,
            self.reused_tokens - earlier.reused_tokens,
            self.prefix_tokens - earlier.prefix_tokens,
            self.evictions - earlier.evictions,
        )

    @property
    def hit_rate(self) -> float:
        return self.hits / self.lookups if self.lookups else 0.0

    @property
    def reused_share(self) -> float:
        return self.reused_tokens / self.prefix_tokens if self.prefix_tokens else 0.0


@dataclass
class PrefixCache:
    """LRU cache of per-sequence KV states; thread-safe (decoding runs in worker threads)."""

    max_bytes: int = 512 * MiB
    max_entries: int = 4096
    stats: CacheStats = field(default_factory=CacheStats)
    _entries: OrderedDict[tuple[int, ...], CachedPrefix] = field(default_factory=OrderedDict)
    _blocks: dict[int, set[tuple[int, ...]]] = field(default_factory=dict)
    """Chained hash of an entry's first k·BLOCK tokens (k ≥ 1) → the entries that start so."""
    _bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def lookup(self, prefix: Sequence[int]) -> tuple[int, CachedPrefix | None]:
        """The longest cached prefix of ``prefix`` that leaves at least one token to feed (its logits are needed),
        as (tokens reused, entry); (0, None) when none is cached."""
        prefix = tuple(prefix)
        limit = len(prefix) - 1
        with self._lock:
            self.stats.lookups += 1
            self.stats.prefix_tokens += len(prefix)
            best, used = None, 0
            hashes = _block_hashes(prefix[: limit - limit % BLOCK])
            for blocks in range(len(hashes), 0, -1):
                start = blocks * BLOCK
                for key in self._blocks.get(hashes[blocks - 1], ()):
                    if key[:start] == prefix[:start] and (shared := _shared_length(key, prefix, start, limit)) > used:
                        best, used = self._entries[key], shared
                if best is not None:
                    break
            if best is None:
                return 0, None
            self._entries.move_to_end(best.ids)
            self.stats.hits += 1
            self.stats.reused_tokens += used
            return used, best

    def store(self, ids: Sequence[int], layers: KV, supersedes: tuple[int, ...] | None = None) -> None:
        """Cache ``layers`` (the KV of exactly ``ids``); drop ``supersedes``, an entry these ids extend."""
        ids = tuple(ids)
        if len(ids) < BLOCK:
            return  # too short to be found by block
        nbytes = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
        if nbytes > self.max_bytes:
            return
        with self._lock:
            if supersedes is not None and supersedes != ids and supersedes in self._entries:
                self._drop(supersedes)
            if ids in self._entries:
                self._drop(ids)
            self._entries[ids] = CachedPrefix(ids, layers, nbytes)
            self._bytes += nbytes
            for block_hash in _block_hashes(ids):
                self._blocks.setdefault(block_hash, set()).add(ids)
            while self._entries and (self._bytes > self.max_bytes or len(self._entries) > self.max_entries):
                self._drop(next(iter(self._entries)))
                self.stats.evictions += 1

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._blocks.clear()
            self._bytes = 0

    def _drop(self, key: tuple[int, ...]) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.nbytes
        for block_hash in _block_hashes(key):
            holders = self._blocks.get(block_hash)
            if holders is not None:
                holders.discard(key)
                if not holders:
                    del self._blocks[block_hash]


def _block_hashes(ids: tuple[int, ...]) -> list[int]:
    """Hash of the first k·BLOCK tokens for each whole block k, chained (each covers all blocks before it)."""
    hashes, chained = [], 0
    for start in range(0, len(ids) - len(ids) % BLOCK, BLOCK):
        chained = hash((chained, ids[start : start + BLOCK]))
        hashes.append(chained)
    return hashes


def _shared_length(cached: tuple[int, ...], prefix: tuple[int, ...], start: int, limit: int) -> int:
    """How many leading tokens ``cached`` and ``prefix`` share, knowing the first ``start`` match; at most ``limit``."""
    end = min(len(cached), limit)
    shared = start
    while shared < end and cached[shared] == prefix[shared]:
        shared += 1
    return shared
