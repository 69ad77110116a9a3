"""cybulde.text.batching: the one batching of inference, by hand."""

from __future__ import annotations

import pytest

from cybulde.text.batching import length_sorted_batches


def test_shortest_first_ties_in_row_order_cut_by_batch_size() -> None:
    # lengths by row:      0  1  2  3  4  5  6
    lengths = [5, 2, 9, 2, 7, 1, 5]
    # by length: row 5 (1), rows 1 and 3 (2, in row order), rows 0 and 6 (5), row 4 (7), row 2 (9)
    assert length_sorted_batches(lengths, 3) == [[5, 1, 3], [0, 6, 4], [2]]
    assert length_sorted_batches(lengths, 10) == [[5, 1, 3, 0, 6, 4, 2]]
    assert length_sorted_batches([], 4) == []


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        length_sorted_batches([1, 2], 0)
