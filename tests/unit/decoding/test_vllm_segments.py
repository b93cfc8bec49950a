"""The stop strings a vLLM engine generates with: they never fire before a boundary rule can decide, and for WORD
they fire where it decides, so a word segment takes one engine request, not two."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from services.common.bundled_models import BUNDLED_WEAK
from services.decoding.boundaries import Boundary, StopRule, first_end
from services.decoding.vllm_segments import MAX_WORD_STOPS, BoundaryVocabulary

TOKENIZER = AutoTokenizer.from_pretrained(BUNDLED_WEAK)
VOCAB = BoundaryVocabulary.from_tokenizer(TOKENIZER)
WORD = StopRule(32, Boundary.WORD)
PIECES = [VOCAB.token_text(i) for i in range(len(TOKENIZER))]
TEXT_PIECES = [p for p in PIECES if len(p) == 1]  # the bundled tokenizer's characters (no special tokens)


def first_stop(pieces: list[str], stops: list[str]) -> int | None:
    """The index of the token that completes the first stop string in the generated text, as vLLM stops."""
    for index in range(len(pieces)):
        text = "".join(pieces[: index + 1])
        if any(stop in text for stop in stops):
            return index
    return None


def test_word_stops_pair_a_word_ending_with_whitespace_and_are_bounded() -> None:
    stops = VOCAB.approximate_stops(WORD)
    assert "e " in stops and "7\n" in stops and "? " in stops
    assert not any(stop.isspace() for stop in stops)  # bare whitespace fired on a segment's leading space
    assert len(stops) == 94 * 2 <= MAX_WORD_STOPS  # the bundled vocabulary: 94 printable characters, " " and "\n"


def test_a_vocabulary_with_many_word_endings_keeps_the_commonest_within_the_bound() -> None:
    rare = [chr(0x4E00 + i) for i in range(1000)]  # a thousand characters that end one token each
    vocab = BoundaryVocabulary.from_pieces([*rare, " a", "\nb", "x", "yx", "zx"], frozenset())
    assert len(vocab.word_stops) == MAX_WORD_STOPS
    assert (vocab.word_stops[0], vocab.word_stops[128]) == ("x ", "x\n")  # "x" ends the most tokens
    assert sum(stop[0] in rare for stop in vocab.word_stops) == MAX_WORD_STOPS - 2  # the rest: rare endings


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TEXT_PIECES), min_size=1, max_size=40))
def test_a_word_stop_fires_exactly_where_the_word_rule_decides(pieces: list[str]) -> None:
    stop_at = first_stop(pieces, VOCAB.approximate_stops(WORD))
    decided_at = next((i for i in range(len(pieces)) if first_end(pieces[: i + 1], WORD) is not None), None)
    if stop_at is not None:
        # vLLM stops at stop_at; the rule must be decided by then (else the engine needs another request) ...
        assert decided_at is not None and decided_at <= stop_at
        # ... and for a word ending in a character, a stop fires on the lookahead itself: no token is wasted.
        if not pieces[decided_at - 1][-1].isspace():
            assert stop_at == decided_at
