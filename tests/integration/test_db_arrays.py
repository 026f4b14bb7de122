"""worker.db.array_literal against a real PostgreSQL: whatever the text, the server reads back
the values that were sent, for any element type the loader and the lookups cast to."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from worker.db import array_literal, array_param

# PostgreSQL text holds any character but NUL (validation rejects a NUL before any query)
TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))


def read_back(engine: Any, literal: str, sql_type: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(text(f"SELECT {array_param('a', sql_type)}"), {"a": literal}).scalar_one()
        )


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(TEXT, max_size=8))
def test_any_text_comes_back_as_sent(admin_engine: Any, values: list[str]) -> None:
    assert read_back(admin_engine, array_literal(values), "text") == values


@pytest.mark.parametrize(
    "values",
    [
        ["", "NULL", "null", '"', "\\", '\\"', "{}", "{a,b}", " padded ", "a,b", "tab\there"],
        ["line\nbreak", "cr\rlf\r\n", "é", "😀", "'quoted'", "\\N", '","'],
    ],
)
def test_what_array_syntax_means_stays_text(admin_engine: Any, values: list[str]) -> None:
    assert read_back(admin_engine, array_literal(values), "text") == values


@pytest.mark.parametrize(
    ("values", "sql_type"),
    [
        ([1, -2, 2**62], "bigint"),
        ([True, False], "boolean"),
        ([uuid.UUID(int=7), uuid.UUID(int=2**127)], "uuid"),
        ([date(2024, 2, 29)], "date"),
        ([Decimal("1.50"), Decimal("-0.001")], "numeric"),
        ([datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC)], "timestamptz"),
    ],
)
def test_typed_values_come_back_typed(admin_engine: Any, values: list[Any], sql_type: str) -> None:
    assert read_back(admin_engine, array_literal(values), sql_type) == values


def test_empty_and_nul() -> None:
    assert array_literal([]) == "{}"
    assert array_literal([""]) == '{""}'
    with pytest.raises(ValueError, match="NUL"):
        array_literal(["a\x00b"])
