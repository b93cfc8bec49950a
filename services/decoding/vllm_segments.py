"""One continuation from a vLLM engine, cut exactly where :mod:`services.decoding.boundaries` cuts.

Shared by the weak-model service's vLLM engine and the OpenRLHF adapter (whose policy segments come from
OpenRLHF's own ``llm_engine``), so a segment ends at the same token whichever vLLM engine wrote it.

vLLM generates with approximate stops — stop strings that complete at the rule's cut, its lookahead or later, the
rule's own stop strings, and ``max_tokens`` = what the rule may need — then :func:`first_end` / :func:`find_end`
cut the generated token texts. When a stop string fired before the rule could decide (whitespace inside a subword
token), generation goes on from prefix + generated, with a new seed per round so a seeded continuation stays
reproducible. A stop string that fires late, or none, costs extra tokens, never a wrong cut.

WORD stops are a word's last character followed by whitespace ("e ", "7\n"), not whitespace alone: a word segment
usually starts with whitespace (the other author stopped before it), so a bare " " fired on the first token and
every segment took two requests, each an engine round trip.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.decoding.boundaries import SENTENCE_END, Boundary, Ending, StopRule, find_end, first_end
from services.decoding.requests import GREEDY_BELOW

GenerateFn = Callable[[list[int], Any], Awaitable[Any]]
"""(prompt token ids, ``vllm.SamplingParams``) -> the final ``vllm.RequestOutput``."""

MAX_WORD_STOPS = 256
"""Most WORD stop strings per request: vLLM searches each one's text after every token (the most common word
endings and whitespace starts are kept; a word ending in a rarer character runs on to the next stop or the budget)."""
_WORD_SPACES = 4
"""The most common whitespace characters that start tokens, used in WORD stops (" " and "\n" in practice)."""
_SEED_STRIDE = 0x9E3779B97F4A7C15  # later rounds of a seeded continuation use seed + round * stride (mod 2**63)
_DECODE = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}


@dataclass(frozen=True)
class BoundaryVocabulary:
    """What cutting needs from a tokenizer: each token's own text, the whitespace tokens may start with, EOS ids."""

    token_text: Callable[[int], str]
    spaces: tuple[str, ...]
    """Whitespace characters that start some token: WORD/SENTENCE lookaheads are tokens starting with one."""
    eos_ids: frozenset[int]
    word_stops: tuple[str, ...]
    """WORD stop strings: a character that ends tokens, then whitespace that starts them (see the module)."""

    @classmethod
    def from_pieces(cls, pieces: Sequence[str], eos_ids: frozenset[int]) -> BoundaryVocabulary:
        starts = Counter(p[0] for p in pieces if p[:1].isspace())
        ends = Counter(p[-1] for p in pieces if p and not p[-1].isspace())
        spaces = [space for space, _ in starts.most_common(_WORD_SPACES)]
        word_ends = [end for end, _ in ends.most_common(MAX_WORD_STOPS // max(1, len(spaces)))]
        word_stops = tuple(end + space for space in spaces for end in word_ends)
        return cls(pieces.__getitem__, tuple(sorted(starts)), eos_ids, word_stops)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, extra_eos_ids: Sequence[int] = ()) -> BoundaryVocabulary:
        """From a transformers tokenizer alone (every token decoded once, exactly as generated text is)."""
        pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], **_DECODE)
        eos = {int(i) for i in extra_eos_ids}
        if tokenizer.eos_token_id is not None:
            eos.add(int(tokenizer.eos_token_id))
        return cls.from_pieces(pieces, frozenset(eos))

    def token_texts(self, token_ids: Sequence[int]) -> list[str]:
        return [self.token_text(i) for i in token_ids]

    def approximate_stops(self, rule: StopRule) -> list[str]:
        """Stop strings vLLM can watch for: they complete at the rule's cut (or its lookahead) or later."""
        stops = list(rule.stop)
        if rule.boundary is Boundary.STEP:
            stops.append("\n")
        elif rule.boundary is Boundary.WORD:
            stops += self.word_stops
        elif rule.boundary is Boundary.SENTENCE:
            stops += [end + space for end in SENTENCE_END for space in self.spaces]
        return list(dict.fromkeys(stops))


@dataclass(frozen=True)
class Sampling:
    """How tokens are drawn; any other ``vllm.SamplingParams`` field (top_k, min_p, penalties) goes in ``extra``."""

    temperature: float
    top_p: float = 1.0
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


@dataclass(frozen=True)
class GeneratedSegment:
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    """Each kept token's log-prob as the engine reports it (raw with ``logprobs_mode="raw_logprobs"``)."""
    ending: Ending
    eos_logprob: float | None = None
    """The EOS token's log-prob when the continuation ended at EOS (the token itself is never kept)."""


async def generate_segment(
    generate: GenerateFn,
    prefix_ids: Sequence[int],
    rule: StopRule,
    budget: int,
    sampling: Sampling,
    vocab: BoundaryVocabulary,
) -> GeneratedSegment:
    """Continue ``prefix_ids`` until ``rule`` ends it, generating at most ``budget`` tokens (lookahead included)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    if budget < 1:
        raise ValueError("a segment needs room for at least one generated token")
    stops = vocab.approximate_stops(rule)
    ids: list[int] = []
    logprobs: list[float] = []
    eos_logprob: float | None = None
    for round_ in itertools.count():
        seed = None
        if not sampling.greedy and sampling.seed is not None:
            seed = (sampling.seed + round_ * _SEED_STRIDE) % 2**63
        params = SamplingParams(
            **sampling.extra,
            max_tokens=budget - len(ids),
            temperature=0.0 if sampling.greedy else sampling.temperature,
            top_p=1.0 if sampling.greedy else sampling.top_p,
            seed=seed,
            logprobs=0,
            stop=stops or None,
            stop_token_ids=sorted(vocab.eos_ids),
            include_stop_str_in_output=True,
            # Only the final output is read, and the text comes from the token ids (vocab.token_texts): vLLM's
            # per-step outputs and incremental detokenising (needed only to match stop strings) are work for nothing.
            output_kind=RequestOutputKind.FINAL_ONLY,
            detokenize=bool(stops),
            skip_special_tokens=False,
            spaces_between_special_tokens=False,
            # No min_tokens: it would mask EOS at the first step, and a segment may end the text at once.
            min_tokens=0,
        )
        output = (await generate(list(prefix_ids) + ids, params)).outputs[0]
        new = list(output.token_ids)
        eos = bool(new) and new[-1] in vocab.eos_ids and output.finish_reason == "stop"
        steps = [float(step[token].logprob) for token, step in zip(new, output.logprobs or [], strict=False)]
        if eos:
            new, eos_logprob = new[:-1], steps.pop() if len(steps) == len(new) else None
        ids += new
        logprobs += steps
        if len(logprobs) != len(ids):
            raise RuntimeError("vLLM returned fewer log-probs than tokens")
        pieces = vocab.token_texts(ids)
        if eos or len(ids) >= budget or output.finish_reason == "length":
            ending = find_end(pieces, rule, eos=eos)
            break
        if (found := first_end(pieces, rule)) is not None:
            ending = found
            break
        # A stop string fired before the rule could decide: go on from prefix + generated.
    kept = ending.kept
    return GeneratedSegment(tuple(ids[:kept]), tuple(logprobs[:kept]), ending, eos_logprob if eos else None)
