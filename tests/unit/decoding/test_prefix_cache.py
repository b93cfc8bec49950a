"""The prefix cache's bookkeeping: longest-prefix lookup by blocks, one token always left to feed, LRU and byte caps."""

from __future__ import annotations

import torch

from services.decoding.prefix_cache import BLOCK, PrefixCache


def _kv(tokens: int, layers: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.zeros(1, tokens, 4), torch.zeros(1, tokens, 4)) for _ in range(layers)]


def test_the_longest_cached_prefix_is_found_and_one_token_is_left_to_feed() -> None:
    cache = PrefixCache()
    short, long = tuple(range(40)), tuple(range(70))
    cache.store(short, _kv(40))
    cache.store(long, _kv(70))
    assert cache.lookup((*range(70), 999, 998))[0] == 70  # the longer entry, all of it
    assert cache.lookup((*range(50), 7, 7))[0] == 50  # diverges at 50: the entry that shares most
    assert cache.lookup(tuple(range(70)))[0] == 69  # the whole prefix cached: its last token is fed again
    assert cache.lookup((5, *range(1, 80)))[0] == 0  # differs in the first block: nothing
    assert cache.lookup(tuple(range(BLOCK)))[0] == 0  # a prefix of one block leaves no whole block to reuse
    assert cache.stats.lookups == 5 and cache.stats.hits == 3
    assert cache.stats.reused_tokens == 70 + 50 + 69


def test_a_stored_extension_drops_the_entry_it_extends() -> None:
    cache = PrefixCache()
    first = tuple(range(32))
    cache.store(first, _kv(32))
    cache.store((*first, 5, 6, 7), _kv(35), supersedes=first)
    assert len(cache) == 1 and cache.lookup((*first, 5, 6, 7, 8))[0] == 35


def test_least_recently_used_entries_go_first_beyond_the_caps() -> None:
    one_entry = sum(k.numel() * 4 + v.numel() * 4 for k, v in _kv(32))
    cache = PrefixCache(max_bytes=2 * one_entry)
    a, b, c = (tuple([n] * 32) for n in (1, 2, 3))
    cache.store(a, _kv(32))
    cache.store(b, _kv(32))
    assert cache.lookup((*a, 0))[0] == 32  # a is now the most recently used
    cache.store(c, _kv(32))
    assert cache.lookup((*b, 0))[0] == 0 and cache.lookup((*a, 0))[0] == 32 and cache.lookup((*c, 0))[0] == 32
    assert cache.nbytes == 2 * one_entry and cache.stats.evictions == 1
    counted = PrefixCache(max_entries=1)
    counted.store(a, _kv(32))
    counted.store(b, _kv(32))
    assert len(counted) == 1 and counted.lookup((*b, 0))[0] == 32
    counted.clear()
    assert len(counted) == 0 and counted.nbytes == 0 and counted.lookup((*b, 0))[0] == 0
