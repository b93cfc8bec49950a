"""Where a continuation ends: boundaries, stop strings, length and EOS, decided on decoded tokens only.

Engine-independent on purpose: the transformers engine feeds tokens one at a time to a :class:`BoundaryScanner`
and stops each row as soon as it ends; a vLLM engine generates with approximate stops (past the cut, never
before it) and applies :func:`find_end` to what it got. Same tokens in, same cut out.

The rules, over generated tokens t1, t2, ... with decoded texts p1, p2, ... (EOS is never a kept token):

- WORD: ends just before the first token t_{k+1} (k >= 1) whose text starts with whitespace; t_{k+1} is a
  lookahead and is dropped. A first token that starts with whitespace is kept (at least one token).
- SENTENCE: ends after t_k (k >= 1) when the kept text ends with '.', '!' or '?' and t_{k+1} starts with
  whitespace (dropped lookahead). EOS after such a token ends there too, with finish reason EOS.
- STEP: ends right after the first token whose text contains a newline; that token is kept.
- stop strings: end right after the token that completes the first occurrence of any stop string in the
  generated text (the prefix is not searched); the token is kept and ``matched_stop`` says which string.
  When several occur, the one that ends first wins, then the earlier in the list.
- NONE: only stop strings, EOS and length.
- EOS: ends before the EOS token, finish reason EOS. Length: at most ``max_new_tokens`` tokens are kept; WORD and
  SENTENCE need one lookahead token, so engines may generate ``max_new_tokens + 1`` (:attr:`tokens_needed`).

Cuts are between whole tokens, so ``text`` always equals the decoded ``token_ids``. With a character-level
tokenizer (the bundled models) every rule above is exact at the character: the WORD cut is where the next
character would be whitespace, the STEP cut right after the newline, the stop cut right after the stop string.
With a subword tokenizer a token holding whitespace, a newline or a stop string in its middle is kept whole (the
continuation may run past the boundary inside that token), and WORD/SENTENCE only see whitespace that starts a
token.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

SENTENCE_END = (".", "!", "?")


class Boundary(enum.Enum):
    NONE = "none"
    WORD = "word"
    SENTENCE = "sentence"
    STEP = "step"


class FinishReason(enum.Enum):
    BOUNDARY = "boundary"
    STOP_STRING = "stop_string"
    LENGTH = "length"
    EOS = "eos"


@dataclass(frozen=True)
class StopRule:
    """Where one continuation may end."""

    max_new_tokens: int
    boundary: Boundary = Boundary.NONE
    stop: tuple[str, ...] = ()

    @property
    def needs_lookahead(self) -> bool:
        """WORD and SENTENCE decide on the token after the cut."""
        return self.boundary in (Boundary.WORD, Boundary.SENTENCE)

    @property
    def tokens_needed(self) -> int:
        """Most tokens an engine must generate to decide: max_new_tokens, plus one lookahead if needed."""
        return self.max_new_tokens + int(self.needs_lookahead)


@dataclass(frozen=True)
class Ending:
    """The decision: keep the first ``kept`` generated tokens; why; the stop string if one matched."""

    kept: int
    reason: FinishReason
    matched_stop: str = ""


class BoundaryScanner:
    """Feed generated tokens one by one; :meth:`push` returns an :class:`Ending` once the continuation ends."""

    def __init__(self, rule: StopRule) -> None:
        if rule.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if any(not s for s in rule.stop):
            raise ValueError("stop strings must not be empty")
        self.rule = rule
        self._text = ""
        self._kept = 0
        self._longest_stop = max((len(s) for s in rule.stop), default=0)

    @property
    def kept(self) -> int:
        return self._kept

    def push(self, piece: str) -> Ending | None:
        """Account for one more generated (non-EOS) token with decoded text ``piece``."""
        rule = self.rule
        if self._kept >= 1 and piece[:1].isspace():
            if rule.boundary is Boundary.WORD:
                return Ending(self._kept, FinishReason.BOUNDARY)
            if rule.boundary is Boundary.SENTENCE and self._text.endswith(SENTENCE_END):
                return Ending(self._kept, FinishReason.BOUNDARY)
        if self._kept == rule.max_new_tokens:  # this token was only a lookahead
            return Ending(self._kept, FinishReason.LENGTH)
        searched_from = max(0, len(self._text) - self._longest_stop + 1)
        self._text += piece
        self._kept += 1
        if rule.stop and (matched := self._first_stop(searched_from)):
            return Ending(self._kept, FinishReason.STOP_STRING, matched)
        if rule.boundary is Boundary.STEP and "\n" in piece:
            return Ending(self._kept, FinishReason.BOUNDARY)
        if self._kept == rule.max_new_tokens and not rule.needs_lookahead:
            return Ending(self._kept, FinishReason.LENGTH)
        return None

    def finish(self, *, eos: bool) -> Ending:
        """The stream ended without :meth:`push` ending it: at EOS, or out of room (the context window)."""
        kept = min(self._kept, self.rule.max_new_tokens)
        return Ending(kept, FinishReason.EOS if eos else FinishReason.LENGTH)

    def _first_stop(self, start: int) -> str:
        """The stop string whose first occurrence ends earliest, searching only text the last piece could complete."""
        best_end, best = len(self._text) + 1, ""
        for stop in self.rule.stop:
            at = self._text.find(stop, start)
            if at >= 0 and at + len(stop) < best_end:
                best_end, best = at + len(stop), stop
        return best


def _scan(pieces: Sequence[str], rule: StopRule) -> tuple[BoundaryScanner, Ending | None]:
    scanner = BoundaryScanner(rule)
    for piece in pieces:
        if (ending := scanner.push(piece)) is not None:
            return scanner, ending
    return scanner, None


def first_end(pieces: Sequence[str], rule: StopRule) -> Ending | None:
    """The ending that ``pieces`` (generated tokens' texts, EOS excluded) already decide, or None if undecided.

    None means more tokens are needed: an engine whose approximate stop fired early must generate on.
    """
    return _scan(pieces, rule)[1]


def find_end(pieces: Sequence[str], rule: StopRule, *, eos: bool) -> Ending:
    """Where a continuation ends, given all its generated tokens' texts (EOS excluded).

    ``eos``: the model produced EOS right after ``pieces``; otherwise generation ran out of room (max tokens or the
    context window). An engine that generated past the cut (approximate stops) gets the same answer as one that
    stopped at it.
    """
    scanner, ending = _scan(pieces, rule)
    return ending if ending is not None else scanner.finish(eos=eos)
