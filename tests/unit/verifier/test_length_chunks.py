"""How a micro-batch is cut into forward calls: by length, about a token budget each, equal row counts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.verifier.scorers import length_chunks


def test_21_toy_rows_go_in_three_chunks_of_seven_not_16_and_5() -> None:
    lengths = [100 + (7 * i) % 50 for i in range(21)]  # 2,541 tokens: ceil(2541 / 1024) = 3 chunks
    chunks = length_chunks(lengths, 1024)
    assert [len(c) for c in chunks] == [7, 7, 7]
    flat = [i for c in chunks for i in c]
    assert [lengths[i] for i in flat] == sorted(lengths)


def test_the_count_follows_the_tokens_not_the_rows() -> None:
    assert [len(c) for c in length_chunks([120] * 64, 1024)] == [8] * 8  # 7,680 tokens: 8 calls
    assert [len(c) for c in length_chunks([500] * 64, 1024)] == [2] * 32  # longer rows, fewer per call
    assert [len(c) for c in length_chunks([120] * 64, 16384)] == [64]  # a GPU budget: one call
    assert [len(c) for c in length_chunks([3000, 3000], 1024)] == [1, 1]  # never more chunks than rows
    assert length_chunks([], 1024) == []


def test_no_leftover_chunk_of_one_or_two_rows() -> None:
    """A call costs the same fixed Python and dispatch time for one row as for eight: 17 rows that a 16-row budget
    would have cut 16 + 1 go 8 + 9."""
    assert [len(c) for c in length_chunks([120] * 17, 16 * 120)] == [8, 9]
    assert sorted(len(c) for c in length_chunks([120] * 66, 8 * 120)) == [7] * 6 + [8] * 3  # not 8 x 8 + 2


@given(st.lists(st.integers(1, 4096), max_size=300), st.integers(1, 20000))
def test_every_row_once_in_length_order_and_counts_within_one(lengths: list[int], budget: int) -> None:
    chunks = length_chunks(lengths, budget)
    flat = [i for c in chunks for i in c]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths)
    if lengths:
        sizes = [len(c) for c in chunks]
        assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
        assert len(chunks) == min(len(lengths), -(-sum(lengths) // budget))
