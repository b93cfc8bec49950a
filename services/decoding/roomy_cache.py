"""A transformers KV cache that appends each step's states in place, into room kept at the end of every layer.

transformers' ``DynamicLayer`` appends by ``torch.cat`` of the whole cache with the new token's states: every
decoding step copies every row's keys and values of every layer. With many rows that copy is most of the step (a
torch profile of the bundled policy, 64 rows at 150 cached tokens: ``aten::cat`` 73 % of the forward pass, 1.4 ms
per layer tensor). :class:`RoomyLayer` allocates ``ROOM`` more positions than it holds and writes new states into
them; attention reads a view of the positions in use. A row selection (rows leaving) copies the buffer once, room
included, and dropping leading positions is a view.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

ROOM = 64
"""Positions allocated beyond those in use; a layer that runs out reallocates with this much room again."""


class RoomyLayer(DynamicLayer):
    """A :class:`DynamicLayer` whose ``keys``/``values`` are views of buffers with room to append in place."""

    def __init__(self, key_buffer: torch.Tensor, value_buffer: torch.Tensor, used: int, room: int = ROOM) -> None:
        """Take ``key_buffer``/``value_buffer`` ``[rows, heads, capacity, head_dim]`` as they are, the first
        ``used`` positions holding states; ``room``: what to leave free when it must reallocate."""
        super().__init__()
        self.dtype, self.device, self.is_initialized = key_buffer.dtype, key_buffer.device, True
        self._room = room
        self._key_buffer, self._value_buffer, self._used = key_buffer, value_buffer, used
        self._sync()

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys is not self._key_view:  # someone replaced the tensors: adopt them
            self._key_buffer, self._value_buffer = self.keys, self.values
            self._used = self.keys.shape[-2]
        added = key_states.shape[-2]
        if self._used + added > self._key_buffer.shape[-2]:
            held = self._used
            self._key_buffer = _with_room(self._key_buffer[..., :held, :], added + self._room)
            self._value_buffer = _with_room(self._value_buffer[..., :held, :], added + self._room)
        self._key_buffer[..., self._used : self._used + added, :] = key_states
        self._value_buffer[..., self._used : self._used + added, :] = value_states
        self._used += added
        self._sync()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows ``indices``, room included (one copy)."""
        self._key_buffer = self._key_buffer.index_select(0, indices)
        self._value_buffer = self._value_buffer.index_select(0, indices)
        self._sync()

    def drop_front(self, positions: int) -> None:
        """Forget the first ``positions`` positions of every row (a view: nothing is copied)."""
        self._key_buffer = self._key_buffer[..., positions:, :]
        self._value_buffer = self._value_buffer[..., positions:, :]
        self._used -= positions
        self._sync()

    def _sync(self) -> None:
        self.keys = self._key_view = self._key_buffer[..., : self._used, :]
        self.values = self._value_buffer[..., : self._used, :]


def roomy_cache(layers: Sequence[tuple[torch.Tensor, torch.Tensor]], room: int = ROOM) -> DynamicCache:
    """A cache holding ``layers`` (per layer, keys and values ``[rows, heads, positions, head_dim]``), with room."""
    return cache_of(
        [RoomyLayer(_with_room(keys, room), _with_room(values, room), keys.shape[-2], room) for keys, values in layers]
    )


def cache_of(layers: list[RoomyLayer]) -> DynamicCache:
    """A cache made of these layers."""
    cache = DynamicCache()
    cache.layers = list(layers)
    cache.layer_class_to_replicate = None
    return cache


def drop_front(cache: DynamicCache, positions: int) -> DynamicCache:
    """``cache`` without its first ``positions`` positions (a view where the layers are roomy)."""
    if all(isinstance(layer, RoomyLayer) for layer in cache.layers):
        for layer in cache.layers:
            layer.drop_front(positions)  # type: ignore[attr-defined]
        return cache
    return roomy_cache([(layer.keys[..., positions:, :], layer.values[..., positions:, :]) for layer in cache.layers])


def _with_room(states: torch.Tensor, room: int) -> torch.Tensor:
    """``states`` copied into a buffer ``room`` positions longer."""
    rows, heads, used, dim = states.shape
    buffer = states.new_empty((rows, heads, used + room, dim))
    buffer[..., :used, :] = states
    return buffer
