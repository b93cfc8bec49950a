"""Batch tensors for transformers decoding: left-padded prefills (from the prefix cache where it can), batches
joined side by side, and one row's KV states copied out.

Every batch is left-padded: row i's real positions are where ``mask[i]`` is 1, and a row may have padding *between*
real positions (its cached prefix, then its uncached suffix; or the column of a step it sat out). The mask and the
position ids say which positions are real, so the model attends to those alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache, PreTrainedModel

from services.decoding.prefix_cache import KV, CachedPrefix
from services.decoding.requests import SegmentRequest
from services.decoding.roomy_cache import ROOM, RoomyLayer, cache_of, drop_front

Batch = tuple[DynamicCache, torch.Tensor, torch.Tensor]
"""KV cache, attention mask ``[rows, width]`` and last logits ``[rows, vocab]`` of a batch of rows."""


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input ids, attention mask and position ids of left-padded rows (positions start at 0 in every row)."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


def _prefill_from_cache(
    model: PreTrainedModel,
    requests: Sequence[SegmentRequest],
    reuse: Sequence[tuple[int, CachedPrefix | None]],
    pad_id: int,
) -> Batch:
    """Prefill only what the cache lacks: row i's cached KV (left-padded to the longest) then its uncached suffix
    (left-padded too), so a row's positions may have padding between the two."""
    cached = [used for used, _ in reuse]
    suffixes = [r.prefix_ids[used:] for r, used in zip(requests, cached, strict=True)]
    width, longest = max(cached), max(len(s) for s in suffixes)
    template = next(entry for _, entry in reuse if entry is not None).layers
    layers = []
    for layer, (keys, _) in enumerate(template):
        shape = (len(requests), keys.shape[0], width + longest, keys.shape[2])  # room for the suffix
        past_keys, past_values = torch.zeros(shape, dtype=keys.dtype), torch.zeros(shape, dtype=keys.dtype)
        for i, (used, entry) in enumerate(reuse):
            if entry is not None and used:
                past_keys[i, :, width - used : width] = entry.layers[layer][0][:, :used]
                past_values[i, :, width - used : width] = entry.layers[layer][1][:, :used]
        layers.append(RoomyLayer(past_keys, past_values, width, room=longest))
    ids = torch.full((len(requests), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(requests), width + longest), dtype=torch.long)
    positions = torch.zeros((len(requests), longest), dtype=torch.long)
    for i, (used, suffix) in enumerate(zip(cached, suffixes, strict=True)):
        ids[i, longest - len(suffix) :] = torch.tensor(suffix, dtype=torch.long)
        mask[i, width - used : width] = 1
        mask[i, width + longest - len(suffix) :] = 1
        positions[i, longest - len(suffix) :] = torch.arange(used, used + len(suffix))
    cache = cache_of(layers)  # the suffix is written into the room, in place
    out = model(
        input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
        logits_to_keep=1,
    )  # fmt: skip
    return out.past_key_values, mask, out.logits[:, -1, :].float()


def prefill(
    model: PreTrainedModel,
    requests: Sequence[SegmentRequest],
    reuse: Sequence[tuple[int, CachedPrefix | None]],
    pad_id: int,
) -> Batch:
    """Prefill every request's prefix (``reuse[i]``: tokens of it cached, and the entry; (0, None) for none).

    Rows that found their prefix cached are prefilled apart from those that did not, so a short uncached suffix is
    not padded to a whole prompt's length; the two parts are then joined, in request order."""
    hits = [i for i, (_, entry) in enumerate(reuse) if entry is not None]
    misses = [i for i, (_, entry) in enumerate(reuse) if entry is None]
    parts: list[Batch] = []
    if misses:
        ids, mask, positions = left_pad([requests[i].prefix_ids for i in misses], pad_id)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        parts.append((out.past_key_values, mask, out.logits[:, -1, :].float()))
    if hits:
        parts.append(_prefill_from_cache(model, [requests[i] for i in hits], [reuse[i] for i in hits], pad_id))
    if len(parts) == 1:
        return parts[0]
    order = torch.argsort(torch.tensor(misses + hits))  # back to request order
    cache, mask, logits = concat(parts)
    cache.batch_select_indices(order)
    return cache, mask[order], logits[order]


def concat(parts: Sequence[Batch], room: int = ROOM, keep: torch.Tensor | None = None) -> Batch:
    """Batches stacked row-wise, each left-padded to the widest, in one cache with ``room`` to append in place;
    ``keep``: only these rows of the first batch (rows that left are dropped in the same copy)."""
    if keep is not None:
        first_cache, first_mask, first_logits = parts[0]
        parts = [(first_cache, first_mask[keep], first_logits[keep]), *parts[1:]]
    width = max(mask.shape[1] for _, mask, _ in parts)
    rows = sum(mask.shape[0] for _, mask, _ in parts)
    layers = []
    for layer in range(len(parts[0][0].layers)):
        template = parts[0][0].layers[layer].keys
        heads, dim = template.shape[1], template.shape[3]
        keys = template.new_empty((rows, heads, width + room, dim))  # the room is written before it is read
        values = template.new_empty((rows, heads, width + room, dim))
        row = 0
        for index, (cache, mask, _) in enumerate(parts):
            part_keys, part_values = cache.layers[layer].keys, cache.layers[layer].values
            if index == 0 and keep is not None:
                part_keys, part_values = part_keys.index_select(0, keep), part_values.index_select(0, keep)
            count, used = mask.shape
            keys[row : row + count, :, : width - used].zero_()  # padding is masked, but must not be NaN
            values[row : row + count, :, : width - used].zero_()
            keys[row : row + count, :, width - used : width] = part_keys
            values[row : row + count, :, width - used : width] = part_values
            row += count
        layers.append(RoomyLayer(keys, values, width, room))
    mask = torch.cat([torch.nn.functional.pad(mask, (width - mask.shape[1], 0)) for _, mask, _ in parts])
    logits = torch.cat([logits for _, _, logits in parts])
    return cache_of(layers), mask, logits


def trim(cache: DynamicCache, mask: torch.Tensor) -> tuple[DynamicCache, torch.Tensor]:
    """Drop the leading columns no row uses (rows that left, steps every row sat out)."""
    used = mask.any(dim=0).nonzero()
    first = int(used[0]) if len(used) else mask.shape[1]
    if first == 0:
        return cache, mask
    return drop_front(cache, first), mask[:, first:]


def snapshot(cache: DynamicCache, mask: torch.Tensor, slot: int) -> KV:
    """One row's KV states at its real positions (copies: the batch tensors move on)."""
    real = mask[slot].bool()
    return [(layer.keys[slot][:, real], layer.values[slot][:, real]) for layer in cache.layers]
