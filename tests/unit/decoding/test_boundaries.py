"""Boundary rules on decoded tokens: exact cuts for word, sentence, step, stop strings, length and EOS."""

from __future__ import annotations

import pytest

from services.decoding.boundaries import (
    Boundary,
    BoundaryScanner,
    Ending,
    FinishReason,
    StopRule,
    find_end,
    first_end,
)

WORD, SENTENCE, STEP, NONE = Boundary.WORD, Boundary.SENTENCE, Boundary.STEP, Boundary.NONE
BOUNDARY, STOP, LENGTH, EOS = FinishReason.BOUNDARY, FinishReason.STOP_STRING, FinishReason.LENGTH, FinishReason.EOS


def chars(text: str) -> list[str]:
    """What a character-level tokenizer decodes: one piece per character."""
    return list(text)


def cut(text: str, boundary: Boundary = NONE, stop: tuple[str, ...] = (), n: int = 256, eos: bool = False) -> Ending:
    return find_end(chars(text), StopRule(n, boundary, stop), eos=eos)


def kept_text(text: str, ending: Ending) -> str:
    return "".join(chars(text)[: ending.kept])


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        ("28+3=31. Then", "28+3=31."),  # the word ends where the next character is whitespace
        (" 4 bags", " 4"),  # a leading space is kept: at least one token
        ("\n28+3", "\n28+3"),  # ... even a newline; the stream then ends without a boundary
        ("pens\nHow", "pens"),  # a newline is whitespace too
        ("a\tb", "a"),
        ("x  y", "x"),
    ],
)
def test_word_ends_before_the_first_whitespace_after_one_token(generated: str, expected: str) -> None:
    ending = cut(generated, WORD)
    assert kept_text(generated, ending) == expected
    assert ending.reason is (BOUNDARY if expected != generated else LENGTH)


def test_word_drops_the_lookahead_token_and_reports_no_stop() -> None:
    assert cut("abc def", WORD) == Ending(3, BOUNDARY, "")


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        ("4*7=28.\n28+3=31.", "4*7=28."),
        ("She has 3. Then 4.", "She has 3."),
        ("Done! Next", "Done!"),
        ("Why? Because", "Why?"),
        ("3.5 is 1.5 more. Yes", "3.5 is 1.5 more."),  # a dot inside a number is no sentence end
        ("e.g. this", "e.g."),  # abbreviations count: the rule is purely textual
        ("#### 31", "#### 31"),  # never ends: length
    ],
)
def test_sentence_ends_after_punctuation_followed_by_whitespace(generated: str, expected: str) -> None:
    assert kept_text(generated, cut(generated, SENTENCE)) == expected


def test_sentence_at_eos_is_kept_and_reports_eos() -> None:
    assert cut("28+3=31.", SENTENCE, eos=True) == Ending(8, EOS)


def test_sentence_needs_one_token_before_the_cut() -> None:
    # The prefix ended a sentence; the continuation starts with whitespace: it is kept, not an empty cut.
    ending = cut(" Next one. Go", SENTENCE)
    assert kept_text(" Next one. Go", ending) == " Next one."


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        ("4*7=28.\n28+3=31.\n", "4*7=28.\n"),
        ("\n28+3=31.\n", "\n"),  # the first token is a newline: a one-token step
        ("=31.\n#### 31", "=31.\n"),
    ],
)
def test_step_ends_right_after_the_first_newline(generated: str, expected: str) -> None:
    ending = cut(generated, STEP)
    assert kept_text(generated, ending) == expected
    assert ending.reason is BOUNDARY


def test_step_keeps_a_multi_character_token_whole() -> None:
    # Subword tokenizers: the newline sits inside ".\n28"; the token is kept whole (documented).
    assert find_end(["=31", ".\n28", "+3"], StopRule(10, STEP), eos=False) == Ending(2, BOUNDARY)


def test_stop_string_ends_right_after_it_and_is_kept() -> None:
    text = "4*7=28.\n#### 28\n"
    ending = cut(text, NONE, ("####",))
    assert ending == Ending(12, STOP, "####")
    assert kept_text(text, ending) == "4*7=28.\n####"


def test_first_stop_string_to_end_wins_then_list_order() -> None:
    assert cut("a=31. b", NONE, ("31. b", "=3")).matched_stop == "=3"
    assert cut("xyz", NONE, ("yz", "z")).matched_stop == "yz"  # both end at z: earlier in the list
    assert cut("xyz", NONE, ("z", "yz")).matched_stop == "z"


def test_stop_string_spanning_several_tokens() -> None:
    ending = find_end(["28", "+3", "=3", "1.", "\n"], StopRule(10, NONE, ("3=31",)), eos=False)
    assert ending == Ending(4, STOP, "3=31")


def test_stop_string_beats_a_step_ending_on_the_same_token() -> None:
    assert cut("31.\nx", STEP, ("\n",)) == Ending(4, STOP, "\n")


def test_word_boundary_comes_before_a_later_stop_string() -> None:
    assert cut("ab cd", WORD, ("cd",)) == Ending(2, BOUNDARY)


def test_none_runs_to_length() -> None:
    assert cut("abc def. ghi\njkl", NONE, n=10) == Ending(10, LENGTH)


def test_eos_ends_before_max_new_tokens() -> None:
    assert cut("abc", NONE, n=10, eos=True) == Ending(3, EOS)
    assert cut("ab", WORD, n=10, eos=True) == Ending(2, EOS)
    assert cut("", NONE, n=10, eos=True) == Ending(0, EOS)  # EOS as the very first token


def test_length_without_lookahead_stops_at_max_new_tokens() -> None:
    rule = StopRule(3, STEP)
    assert rule.tokens_needed == 3
    assert find_end(chars("abcdef"), rule, eos=False) == Ending(3, LENGTH)
    # The newline is the 3rd token: a boundary, not length.
    assert find_end(chars("ab\ncd"), rule, eos=False) == Ending(3, BOUNDARY)


def test_word_and_sentence_use_one_lookahead_past_max_new_tokens() -> None:
    rule = StopRule(3, WORD)
    assert rule.tokens_needed == 4
    # The word ends exactly at the cap: the lookahead (4th token) is a space, so this is a boundary.
    assert find_end(chars("abc d"), rule, eos=False) == Ending(3, BOUNDARY)
    assert find_end(chars("abcd"), rule, eos=False) == Ending(3, LENGTH)
    assert find_end(chars("abc"), rule, eos=True) == Ending(3, EOS)
    # Out of room before the lookahead (context window full): length, never more than the cap.
    assert find_end(chars("abc"), rule, eos=False) == Ending(3, LENGTH)
    assert find_end(chars("a.b. c"), StopRule(4, SENTENCE), eos=False) == Ending(4, BOUNDARY)


def test_scanner_and_find_end_agree_on_overshoot() -> None:
    """A vLLM-style engine that generated past the cut gets the same ending as the token-by-token engine."""
    text = "4*7=28.\n28+3=31.\n#### 31"
    for boundary in Boundary:
        for stop in [(), ("=31",), ("####", "+3")]:
            rule = StopRule(12, boundary, stop)
            scanner = BoundaryScanner(rule)
            streamed = None
            for piece in chars(text):
                streamed = scanner.push(piece)
                if streamed is not None:
                    break
            assert streamed == find_end(chars(text), rule, eos=False)
            assert streamed.kept <= 12


def test_first_end_says_when_more_tokens_are_needed() -> None:
    """An approximate stop (e.g. any whitespace for SENTENCE) may fire before the rule decides: generate on."""
    rule = StopRule(50, SENTENCE)
    assert first_end(chars("4*7=28 "), rule) is None  # whitespace, but no sentence end before it
    assert first_end(chars("4*7=28. "), rule) == Ending(7, BOUNDARY)
    assert first_end(chars("abc"), StopRule(3, WORD)) is None  # the lookahead is still missing
    assert first_end(chars("abc"), StopRule(3, STEP)) == Ending(3, LENGTH)


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="max_new_tokens"):
        BoundaryScanner(StopRule(0))
    with pytest.raises(ValueError, match="stop strings"):
        BoundaryScanner(StopRule(4, NONE, ("",)))
