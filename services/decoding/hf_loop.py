"""Batched, KV-cached decoding and scoring with a transformers causal LM (blocking; run it in a thread).

A manual loop rather than ``generate``: each row stops exactly where its :class:`BoundaryScanner` says, records
the log-prob of its token under the unmodified distribution, and samples from its own ``torch.Generator`` so a
seeded item gives the same tokens whichever batch it lands in. Finished rows leave the batch (and the KV cache).
The loop is :class:`~services.decoding.hf_batch.DecodingBatch`; :func:`generate` runs one batch of segments in it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from transformers import PreTrainedModel

from services.decoding.hf_batch import DecodingBatch, Generated
from services.decoding.hf_prefill import left_pad
from services.decoding.prefix_cache import PrefixCache
from services.decoding.requests import LogProbsRequest, SegmentRequest

__all__ = ["Generated", "generate", "score"]


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
    batch = DecodingBatch(
        model, pieces=pieces, eos_ids=eos_ids, pad_id=pad_id, context_window=context_window, prefix_cache=prefix_cache
    )
    done: dict[Hashable, Generated] = {}
    ended = batch.step(join=list(enumerate(requests)))
    while True:
        done.update(ended)
        finished = [key for key, _ in ended]
        if len(done) == len(requests):
            batch.step(leave=finished)  # to the prefix cache
            break
        ended = batch.step(leave=finished)
    return [done[index] for index in range(len(requests))]


@torch.inference_mode()
def score(
    model: PreTrainedModel, requests: Sequence[LogProbsRequest], *, pad_id: int, bos_id: int
) -> list[list[float]]:
    """Log-prob of every text token given its context (an empty context becomes ``[bos_id]``), one forward pass."""
    contexts = [list(r.context_ids) or [bos_id] for r in requests]
    ids, mask, positions = left_pad([c + list(r.text_ids) for c, r in zip(contexts, requests, strict=True)], pad_id)
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
