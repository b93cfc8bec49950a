"""Batched, KV-cached decoding and scoring with a transformers causal LM (blocking; run it in a thread).

A manual loop rather than ``generate``: each row stops exactly where its :class:`BoundaryScanner` says, records
the log-prob of its token under the unmodified distribution, and samples from its own ``torch.Generator`` so a
seeded item gives the same tokens whichever batch it lands in. Finished rows leave the batch (and the KV cache).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, PreTrainedModel

from services.decoding.boundaries import BoundaryScanner, Ending
from services.decoding.prefix_cache import CachedPrefix, PrefixCache
from services.decoding.requests import GREEDY_BELOW, LogProbsRequest, SegmentRequest


@dataclass
class Generated:
    """Kept token ids and their log-probs, and why the row ended."""

    token_ids: list[int]
    logprobs: list[float]
    ending: Ending
    eos_id: int | None = None
    """The EOS token that ended the text (not kept), when one did."""
    eos_logprob: float | None = None
    """Its log-prob: a trainer that learns to stop trains on it."""


@dataclass
class _Row:
    request: SegmentRequest
    scanner: BoundaryScanner
    generator: torch.Generator | None
    budget: int  # tokens this row may generate: the rule's need, capped by the context window
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    ending: Ending | None = None
    eos_id: int | None = None
    eos_logprob: float | None = None


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def _new_generator(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    if seed is None:
        generator.seed()  # fresh entropy: unseeded requests differ
    else:
        generator.manual_seed(seed)
    return generator


def _choose(logits: torch.Tensor, request: SegmentRequest, generator: torch.Generator | None) -> int:
    """Greedy at temperature ~0, else a sample from the temperature-scaled, nucleus-filtered distribution."""
    if request.temperature < GREEDY_BELOW:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / request.temperature, dim=-1)
    if request.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # Keep the smallest head whose mass reaches top_p: a token stays if the mass before it is below top_p.
        sorted_probs[(sorted_probs.cumsum(-1) - sorted_probs) >= request.top_p] = 0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def _prefill_from_cache(
    model: PreTrainedModel,
    requests: Sequence[SegmentRequest],
    reuse: Sequence[tuple[int, CachedPrefix | None]],
    pad_id: int,
) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
    """Prefill only what the cache lacks: row i's cached KV (left-padded to the longest) then its uncached suffix
    (left-padded too), so a row's positions may have padding between the two; the mask and position ids say which
    positions are real, as they do for the usual left padding. Returns the cache, the mask and the last logits."""
    cached = [used for used, _ in reuse]
    suffixes = [r.prefix_ids[used:] for r, used in zip(requests, cached, strict=True)]
    width, longest = max(cached), max(len(s) for s in suffixes)
    template = next(entry for _, entry in reuse if entry is not None).layers
    layers = []
    for layer, (keys, _) in enumerate(template):
        shape = (len(requests), keys.shape[0], width, keys.shape[2])
        past_keys, past_values = torch.zeros(shape, dtype=keys.dtype), torch.zeros(shape, dtype=keys.dtype)
        for i, (used, entry) in enumerate(reuse):
            if entry is not None and used:
                past_keys[i, :, width - used :] = entry.layers[layer][0][:, :used]
                past_values[i, :, width - used :] = entry.layers[layer][1][:, :used]
        layers.append((past_keys, past_values))
    ids = torch.full((len(requests), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(requests), width + longest), dtype=torch.long)
    positions = torch.zeros((len(requests), longest), dtype=torch.long)
    for i, (used, suffix) in enumerate(zip(cached, suffixes, strict=True)):
        ids[i, longest - len(suffix) :] = torch.tensor(suffix, dtype=torch.long)
        mask[i, width - used : width] = 1
        mask[i, width + longest - len(suffix) :] = 1
        positions[i, longest - len(suffix) :] = torch.arange(used, used + len(suffix))
    cache = DynamicCache(ddp_cache_data=layers)
    out = model(
        input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
        logits_to_keep=1,
    )  # fmt: skip
    return out.past_key_values, mask, out.logits[:, -1, :].float()


def _prefill(
    model: PreTrainedModel,
    requests: Sequence[SegmentRequest],
    reuse: Sequence[tuple[int, CachedPrefix | None]],
    pad_id: int,
) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
    """Prefill every row: rows that found their prefix cached apart from those that did not, so a short uncached
    suffix is not padded to a whole prompt's length, then the two joined into one left-padded batch."""
    hits = [i for i, (_, entry) in enumerate(reuse) if entry is not None]
    misses = [i for i, (_, entry) in enumerate(reuse) if entry is None]
    parts = []
    if misses:
        ids, mask, positions = _left_pad([requests[i].prefix_ids for i in misses], pad_id)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
        parts.append((misses, out.past_key_values, mask, out.logits[:, -1, :].float()))
    if hits:
        parts.append((hits, *_prefill_from_cache(model, [requests[i] for i in hits], [reuse[i] for i in hits], pad_id)))
    if len(parts) == 1:
        return parts[0][1], parts[0][2], parts[0][3]
    width = max(mask.shape[1] for _, _, mask, _ in parts)
    order = torch.argsort(torch.tensor([i for rows, _, _, _ in parts for i in rows]))  # back to request order
    layers = []
    for layer in range(len(parts[0][1].layers)):
        keys = torch.cat([_left_pad_seq(cache.layers[layer].keys, width) for _, cache, _, _ in parts])
        values = torch.cat([_left_pad_seq(cache.layers[layer].values, width) for _, cache, _, _ in parts])
        layers.append((keys[order], values[order]))
    mask = torch.cat([torch.nn.functional.pad(mask, (width - mask.shape[1], 0)) for _, _, mask, _ in parts])
    logits = torch.cat([logits for _, _, _, logits in parts])
    return DynamicCache(ddp_cache_data=layers), mask[order], logits[order]


def _left_pad_seq(states: torch.Tensor, width: int) -> torch.Tensor:
    """``[batch, heads, tokens, dim]`` padded with zeros on the left of the token axis to ``width`` tokens."""
    return torch.nn.functional.pad(states, (0, 0, width - states.shape[2], 0))


def _snapshot(cache: DynamicCache, mask: torch.Tensor, slot: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One row's KV states at its real positions (copies: the batch tensors move on)."""
    real = mask[slot].bool()
    return [(layer.keys[slot][:, real], layer.values[slot][:, real]) for layer in cache.layers]


@torch.inference_mode()
def generate(
    model: PreTrainedModel,
    requests: Sequence[SegmentRequest],
    *,
    pieces: Sequence[str],
    eos_ids: frozenset[int],
    pad_id: int,
    context_window: int,
    prefix_cache: PrefixCache | None = None,
) -> list[Generated]:
    """Continue every request until its rule ends it; ``pieces[id]`` is the decoded text of token ``id``.

    With a ``prefix_cache`` each row starts from the longest cached prefix of its ids (feeding only the rest) and
    leaves its KV states there when it ends, under the ids it fed: the next request that extends them (the same
    rollout's next segment) skips recomputing them."""
    rows = [
        _Row(
            request=r,
            scanner=BoundaryScanner(r.rule),
            generator=None if r.temperature < GREEDY_BELOW else _new_generator(r.seed),
            budget=min(r.rule.tokens_needed, context_window - len(r.prefix_ids)),
        )
        for r in requests
    ]
    if any(row.budget < 1 for row in rows):  # validation refuses these; an engine caller might not
        raise ValueError(f"a prefix leaves no room to generate in the {context_window}-token context window")
    reuse = (
        [(0, None)] * len(requests) if prefix_cache is None else [prefix_cache.lookup(r.prefix_ids) for r in requests]
    )
    cache, mask, logits = _prefill(model, requests, reuse, pad_id)
    next_position = torch.tensor([len(r.prefix_ids) for r in requests], dtype=torch.long)
    fed_count = [0] * len(rows)  # generated tokens of each row that are in the cache

    def remember(slot: int, index: int) -> None:
        if prefix_cache is not None:
            fed = requests[index].prefix_ids + tuple(rows[index].ids[: fed_count[index]])
            entry = reuse[index][1]
            prefix_cache.store(fed, _snapshot(cache, mask, slot), None if entry is None else entry.ids)

    active = list(range(len(rows)))  # row index of each slot in the current batch tensors
    while True:
        logprobs = torch.log_softmax(logits, dim=-1)
        fed: list[int] = []
        still: list[int] = []
        for slot, index in enumerate(active):
            row = rows[index]
            token = _choose(logits[slot], row.request, row.generator)
            if token in eos_ids:
                row.ending = row.scanner.finish(eos=True)
                row.eos_id, row.eos_logprob = token, float(logprobs[slot, token])
                remember(slot, index)
                continue
            row.ids.append(token)
            row.logprobs.append(float(logprobs[slot, token]))
            row.ending = row.scanner.push(pieces[token])
            if row.ending is None and len(row.ids) >= row.budget:
                row.ending = row.scanner.finish(eos=False)
            if row.ending is None:
                still.append(slot)
                fed.append(token)
                fed_count[index] += 1
            else:
                remember(slot, index)
        if not still:
            break
        if len(still) < len(active):  # drop finished rows so they cost nothing from here on
            keep = torch.tensor(still, dtype=torch.long)
            cache.batch_select_indices(keep)
            mask, next_position = mask[keep], next_position[keep]
            active = [active[slot] for slot in still]
        mask = torch.cat([mask, torch.ones((len(active), 1), dtype=torch.long)], dim=1)
        out = model(
            input_ids=torch.tensor(fed, dtype=torch.long)[:, None],
            attention_mask=mask,
            position_ids=next_position[:, None],
            past_key_values=cache,
            use_cache=True,
        )
        cache, logits = out.past_key_values, out.logits[:, -1, :].float()
        next_position = next_position + 1
    results = []
    for row in rows:
        assert row.ending is not None
        kept = row.ending.kept
        results.append(Generated(row.ids[:kept], row.logprobs[:kept], row.ending, row.eos_id, row.eos_logprob))
    return results


@torch.inference_mode()
def score(
    model: PreTrainedModel, requests: Sequence[LogProbsRequest], *, pad_id: int, bos_id: int
) -> list[list[float]]:
    """Log-prob of every text token given its context (an empty context becomes ``[bos_id]``), one forward pass."""
    contexts = [list(r.context_ids) or [bos_id] for r in requests]
    ids, mask, positions = _left_pad([c + list(r.text_ids) for c, r in zip(contexts, requests, strict=True)], pad_id)
    longest_text = max(len(r.text_ids) for r in requests)
    # Logits only where needed: the position before each text token, i.e. the last longest_text + 1 positions.
    out = model(
        input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, logits_to_keep=longest_text + 1
    )
    logits = out.logits.float()
    results = []
    for i, request in enumerate(requests):
        n = len(request.text_ids)
        predicting = logits[i, -n - 1 : -1]  # the logits at position t predict token t + 1
        targets = torch.tensor(request.text_ids, dtype=torch.long)[:, None]
        results.append(torch.log_softmax(predicting, dim=-1).gather(-1, targets)[:, 0].tolist())
    return results
