"""The order a chunk's rows are COPYed in: by natural key, one stable sort per key column."""

from __future__ import annotations

import operator

from hypothesis import given
from hypothesis import strategies as st

from worker import loader

SPEC = loader.TableSpec(
    table="t",
    columns=("name", "note", "owner_id"),
    types=("text", "text", "bigint"),
    key=("name", "owner_id"),
    updatable=("note",),
    key_label="(name, owner_id)",
    key_column="name",
)

rows_strategy = st.lists(
    st.tuples(st.sampled_from(["b", "a", "c", "ab", ""]), st.text(max_size=3), st.integers(0, 4)),
    max_size=40,
)


@given(rows_strategy)
def test_rows_come_in_the_order_of_a_sort_by_the_whole_key_ties_in_file_order(rows) -> None:
    by_key = sorted(rows, key=operator.itemgetter(0, 2))  # stable: ties keep file order
    assert loader._in_key_order(SPEC, rows) == by_key


def test_keys_that_do_not_compare_leave_the_file_order() -> None:
    rows = [("b", "x", 2), ("a", "y", None), ("a", "z", 1)]
    assert loader._in_key_order(SPEC, rows) == rows


def test_a_table_without_a_key_keeps_the_file_order() -> None:
    spec = loader.TableSpec("t", ("v",), ("text",), (), ("v",), "", "v")
    rows = [("b",), ("a",)]
    assert loader._in_key_order(spec, rows) == rows
