"""A transformers decoding batch that rows join, pause, continue and leave between forward passes (blocking: run
it in a thread).

:meth:`DecodingBatch.step` samples one token for every running row, each from its own ``torch.Generator`` (so a
seeded segment gives the same tokens whichever batch it lands in) with its log-prob under the unmodified
distribution, asks the row's :class:`BoundaryScanner` whether its segment ended, and feeds the others in one forward
pass. A row whose segment ended *pauses* and is returned; before the next step its owner either continues it with
the row's next segment or lets it leave:

- continue (:meth:`DecodingBatch.step`'s ``resume``): the row keeps its KV states, nothing is recomputed. The next
  segment's first token is sampled from the logits the row paused with, by the new segment's generator: the very
  distribution a fresh prefill of the same text would give, so the tokens are those of the segment-by-segment form.
  Kept tokens that were never fed (a STEP segment's newline) are fed first.
- leave: with a prefix cache, the row's KV states are stored there under the ids it fed, so its next segment (after
  the other author's) prefills only what was added. Its slot sits the steps out until half the slots are idle or
  the next join copies the batch anyway: removing a row copies every other row's states.

New rows join between steps: their prefixes are prefilled (from the prefix cache) and stacked onto the batch. A
paused row sits out the forward pass in its slot (a padding token under a 0 in the attention mask), which costs one
slot and changes nothing. This is continuous batching for an author that writes many short segments of many texts:
the learner's policy in a tandem rollout runs one forward pass per step for all the rollouts it holds, instead of
one decoding call per batch of segments, and the weak model's hf engine decodes every ``Continue`` item in one.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, PreTrainedModel

from services.decoding.boundaries import BoundaryScanner, Ending
from services.decoding.hf_prefill import concat, prefill, snapshot, trim
from services.decoding.prefix_cache import PrefixCache
from services.decoding.requests import GREEDY_BELOW, SegmentRequest


@dataclass
class Generated:
    """Kept token ids and their log-probs, and why the segment ended."""

    token_ids: list[int]
    logprobs: list[float]
    ending: Ending
    eos_id: int | None = None
    """The EOS token that ended the text (not kept), when one did."""
    eos_logprob: float | None = None
    """Its log-prob: a trainer that learns to stop trains on it."""


@dataclass
class _Row:
    key: Hashable
    fed: list[int]
    """Token ids whose KV states this row holds (its prefix, then what it fed)."""
    cached_as: tuple[int, ...] | None
    """The prefix-cache entry it started from; its own entry supersedes it when it leaves."""
    request: SegmentRequest = field(init=False)
    scanner: BoundaryScanner = field(init=False)
    generator: torch.Generator | None = field(init=False)
    budget: int = field(init=False)
    """Tokens this segment may generate: the rule's need, capped by the context window."""
    ids: list[int] = field(init=False)
    logprobs: list[float] = field(init=False)
    to_feed: list[int] = field(init=False)
    """Tokens of the request's prefix the row holds no KV for yet (fed one per step before sampling)."""
    ended: Generated | None = field(init=False)
    gone: bool = False
    """Left the batch; its slot stays (sitting every step out) until the batch is compacted."""

    def start(self, request: SegmentRequest, context_window: int) -> None:
        """Begin ``request``'s segment; its prefix must extend the ids the row holds."""
        held = len(self.fed)
        if tuple(request.prefix_ids[:held]) != tuple(self.fed):  # a shorter prefix fails this too
            raise ValueError(f"row {self.key!r}: the next segment's prefix does not extend the text it holds")
        budget = min(request.rule.tokens_needed, context_window - len(request.prefix_ids))
        if budget < 1:
            raise ValueError(f"a prefix leaves no room to generate in the {context_window}-token context window")
        self.request, self.budget = request, budget
        self.scanner = BoundaryScanner(request.rule)
        self.generator = None if request.greedy else _new_generator(request.seed)
        self.ids, self.logprobs = [], []
        self.to_feed = list(request.prefix_ids[held:])
        self.ended = None

    def end(self, ending: Ending, eos_id: int | None = None, eos_logprob: float | None = None) -> None:
        kept = ending.kept
        self.ended = Generated(self.ids[:kept], self.logprobs[:kept], ending, eos_id, eos_logprob)


class DecodingBatch:
    """Rows of segments decoded together; see the module. Not thread-safe: one caller steps it."""

    def __init__(
        self,
        model: PreTrainedModel,
        *,
        pieces: Sequence[str],
        eos_ids: frozenset[int],
        pad_id: int,
        context_window: int,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        self.model = model
        self.pieces = pieces
        self.eos_ids = eos_ids
        self.pad_id = pad_id
        self.context_window = context_window
        self.prefix_cache = prefix_cache
        self._rows: list[_Row] = []  # in slot order
        self._cache: DynamicCache | None = None
        self._mask = torch.zeros((0, 0), dtype=torch.long)
        self._logits = torch.zeros((0, 0))
        self.forward_passes = 0

    def __len__(self) -> int:
        """Rows in the batch (running or paused)."""
        return sum(not row.gone for row in self._rows)

    @property
    def running(self) -> int:
        """Rows not paused: what the next step decodes."""
        return sum(row.ended is None and not row.gone for row in self._rows)

    @torch.inference_mode()
    def step(
        self,
        join: Sequence[tuple[Hashable, SegmentRequest]] = (),
        resume: Sequence[tuple[Hashable, SegmentRequest]] = (),
        leave: Sequence[Hashable] = (),
        drop: Sequence[Hashable] = (),
    ) -> list[tuple[Hashable, Generated]]:
        """Let ``leave`` go (their states to the prefix cache: their text comes back) and ``drop`` (it does not),
        continue ``resume`` (paused rows, with their next segment), add ``join`` (new keys), then decode one token
        of every running row. Returns the rows whose segment ended in this step, now paused: each must be resumed,
        leave or be dropped at the next step."""
        self._leave(leave, store=True)
        self._leave(drop, store=False)
        by_key = {row.key: row for row in self._rows if not row.gone}
        for key, request in resume:
            if key not in by_key or by_key[key].ended is None:
                raise ValueError(f"row {key!r} is not paused in the batch; only a paused row continues")
            by_key[key].start(request, self.context_window)
        if undecided := [row.key for row in by_key.values() if row.ended is not None]:
            raise ValueError(f"rows {undecided!r} ended their segment: resume them or let them leave")
        self._join(join, by_key)
        return self._decode()

    def _leave(self, keys: Sequence[Hashable], store: bool) -> None:
        """Rows leave at once (their states to the prefix cache if ``store``); their slots go at the next
        compaction, so a row leaving does not copy the whole batch."""
        if not keys:
            return
        leaving = set(keys)
        if unknown := leaving - {row.key for row in self._rows if not row.gone}:
            raise KeyError(f"no rows {sorted(map(repr, unknown))} in the batch")
        assert self._cache is not None
        for slot, row in enumerate(self._rows):
            if row.key in leaving and not row.gone:
                if store and self.prefix_cache is not None:
                    self.prefix_cache.store(row.fed, snapshot(self._cache, self._mask, slot), row.cached_as)
                row.gone = True
        gone = len(self._rows) - len(self)
        if 2 * gone >= len(self._rows):  # half the slots idle: worth one copy
            self._compact()

    def _live_slots(self) -> list[int]:
        return [slot for slot, row in enumerate(self._rows) if not row.gone]

    def _compact(self) -> None:
        """Drop the slots of rows that left (one copy of the rest) and the columns no row uses any more."""
        keep = self._live_slots()
        if len(keep) == len(self._rows):
            return
        self._rows = [self._rows[slot] for slot in keep]
        if not self._rows:
            self._cache, self._mask, self._logits = None, self._mask[:0, :0], self._logits[:0]
            return
        assert self._cache is not None
        index = torch.tensor(keep, dtype=torch.long)
        self._cache.batch_select_indices(index)
        self._cache, self._mask = trim(self._cache, self._mask[index])
        self._logits = self._logits[index]

    def _join(self, join: Sequence[tuple[Hashable, SegmentRequest]], by_key: dict[Hashable, _Row]) -> None:
        if not join:
            return
        keys = [key for key, _ in join]
        if len(set(keys)) < len(keys) or any(key in by_key for key in keys):
            raise ValueError(f"rows must join under keys new to the batch; got {keys!r}")
        requests = [request for _, request in join]
        cache = self.prefix_cache
        reuse = [(0, None)] * len(requests) if cache is None else [cache.lookup(r.prefix_ids) for r in requests]
        rows = []
        for (key, request), (_, entry) in zip(join, reuse, strict=True):
            row = _Row(key, fed=list(request.prefix_ids), cached_as=None if entry is None else entry.ids)
            row.start(request, self.context_window)
            rows.append(row)
        joined = prefill(self.model, requests, reuse, self.pad_id)
        misses = sum(entry is None for _, entry in reuse)
        self.forward_passes += (misses > 0) + (misses < len(reuse))  # prefill() runs misses and hits apart
        live = self._live_slots()
        if not live:
            self._cache, self._mask, self._logits = concat([joined])  # in a cache that appends in place
        else:  # the batch is copied anyway: the slots of rows that left go in the same copy
            assert self._cache is not None
            keep = None if len(live) == len(self._rows) else torch.tensor(live, dtype=torch.long)
            self._cache, self._mask, self._logits = concat([(self._cache, self._mask, self._logits), joined], keep=keep)
            self._cache, self._mask = trim(self._cache, self._mask)
        self._rows = [*(self._rows[slot] for slot in live), *rows]

    def _decode(self) -> list[tuple[Hashable, Generated]]:
        """Sample (or feed) one token per running row and run one forward pass for them."""
        logprobs = torch.log_softmax(self._logits, dim=-1)
        feed = [self.pad_id] * len(self._rows)
        fed = [False] * len(self._rows)
        ended = []
        for slot, row in enumerate(self._rows):
            if row.ended is not None or row.gone:  # paused, or left: sits this step out
                continue
            if row.to_feed:
                token = row.to_feed.pop(0)
            else:
                token = _choose(self._logits[slot], row.request, row.generator)
                if token in self.eos_ids:
                    row.end(row.scanner.finish(eos=True), token, float(logprobs[slot, token]))
                    ended.append((row.key, row.ended))
                    continue
                row.ids.append(token)
                row.logprobs.append(float(logprobs[slot, token]))
                ending = row.scanner.push(self.pieces[token])
                if ending is None and len(row.ids) >= row.budget:
                    ending = row.scanner.finish(eos=False)
                if ending is not None:
                    row.end(ending)
                    # Its kept tokens not fed yet (a STEP newline) are fed if it continues; a lookahead never is.
                    ended.append((row.key, row.ended))
                    continue
            feed[slot], fed[slot] = token, True
            row.fed.append(token)
        if any(fed):
            self._forward(feed, fed)
        return ended

    def _forward(self, feed: list[int], fed: list[bool]) -> None:
        assert self._cache is not None
        real = torch.tensor(fed, dtype=torch.long)
        positions = torch.tensor([len(row.fed) - 1 for row in self._rows], dtype=torch.long)
        self._mask = torch.cat([self._mask, real[:, None]], dim=1)
        out = self.model(
            input_ids=torch.tensor(feed, dtype=torch.long)[:, None],
            attention_mask=self._mask,
            position_ids=positions[:, None],
            past_key_values=self._cache,
            use_cache=True,
        )
        self.forward_passes += 1
        self._cache = out.past_key_values
        stepped = real.bool()
        self._logits[stepped] = out.logits[stepped, -1, :].float()


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
