"""Unit tests for worker.db: COPY text escaping and driver-error translation (no services)."""

from __future__ import annotations

import psycopg2
import pytest
import sqlalchemy.exc as sa_exc
from hypothesis import given
from hypothesis import strategies as st

from worker.db import pg_copy_text, translate, translated
from worker.errors import (
    BulkopsError,
    CheckViolation,
    ConcurrencyConflict,
    DatabaseUnavailable,
    DataError,
    ForeignKeyViolation,
    JobNotFound,
    PermanentError,
    RetryableError,
    SchemaError,
    UniqueViolation,
)

# --- COPY text format ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, r"\N"),
        ("", ""),
        ("plain", "plain"),
        ("back\\slash", "back\\\\slash"),
        ("tab\there", "tab\\there"),
        ("new\nline", "new\\nline"),
        ("carriage\rreturn", "carriage\\rreturn"),
        ("\\N", "\\\\N"),  # the literal text \N must not become NULL
        ("\\\t\n\r", "\\\\\\t\\n\\r"),
        (42, "42"),
        (1.5, "1.5"),
        ("naïve — ünïcode", "naïve — ünïcode"),
    ],
)
def test_pg_copy_text(value: object, expected: str) -> None:
    assert pg_copy_text(value) == expected


def _copy_decode(field: str) -> str | None:
    """PostgreSQL's reading of one COPY text field (the escapes pg_copy_text writes)."""
    if field == r"\N":
        return None
    out: list[str] = []
    chars = iter(field)
    for ch in chars:
        if ch != "\\":
            out.append(ch)
            continue
        nxt = next(chars)
        out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}[nxt])
    return "".join(out)


@given(st.one_of(st.none(), st.text()))
def test_pg_copy_text_round_trips_and_never_splits_a_row(value: str | None) -> None:
    encoded = pg_copy_text(value)
    assert "\t" not in encoded and "\n" not in encoded and "\r" not in encoded
    assert _copy_decode(encoded) == value


# --- driver error translation -------------------------------------------------------


class FakePgError(Exception):
    """Looks like a psycopg2 error: a message and a SQLSTATE in ``pgcode``."""

    def __init__(self, message: str, pgcode: str | None) -> None:
        super().__init__(message)
        self.pgcode = pgcode


def wrapped(
    cls: type[sa_exc.DBAPIError], pgcode: str | None, message: str = "boom\nDETAIL: more"
) -> sa_exc.DBAPIError:
    return cls("SELECT 1", {}, FakePgError(message, pgcode))


@pytest.mark.parametrize(
    ("cls", "pgcode", "expected"),
    [
        (sa_exc.DBAPIError, "40001", ConcurrencyConflict),  # serialization failure
        (sa_exc.OperationalError, "40P01", ConcurrencyConflict),  # deadlock
        (sa_exc.OperationalError, "55P03", ConcurrencyConflict),  # lock not available
        (sa_exc.OperationalError, "08006", DatabaseUnavailable),  # connection failure
        (sa_exc.OperationalError, "08001", DatabaseUnavailable),  # cannot connect
        (sa_exc.DBAPIError, "57P01", DatabaseUnavailable),  # admin shutdown
        (sa_exc.OperationalError, None, DatabaseUnavailable),  # no SQLSTATE at all
        (sa_exc.IntegrityError, "23505", UniqueViolation),
        (sa_exc.IntegrityError, "23503", ForeignKeyViolation),
        (sa_exc.IntegrityError, "23514", CheckViolation),
        (sa_exc.DataError, "22001", DataError),  # value too long
        (sa_exc.ProgrammingError, "42P01", SchemaError),  # undefined table
        (sa_exc.ProgrammingError, "42703", SchemaError),  # undefined column
    ],
)
def test_translate_maps_sqlstate_to_the_error_tree(
    cls: type[sa_exc.DBAPIError], pgcode: str | None, expected: type[BulkopsError]
) -> None:
    error = translate(wrapped(cls, pgcode))
    assert type(error) is expected
    # the first line of the driver's message, not the whole multi-line text
    assert error.message.startswith("boom")
    assert "DETAIL" not in error.message


@pytest.mark.parametrize(
    ("pgcode", "branch"),
    [("40001", RetryableError), ("08006", RetryableError), ("23505", PermanentError)],
)
def test_translated_errors_land_in_the_right_branch(
    pgcode: str, branch: type[BulkopsError]
) -> None:
    assert isinstance(translate(wrapped(sa_exc.DBAPIError, pgcode)), branch)


def test_schema_error_tells_the_operator_what_to_do() -> None:
    error = translate(wrapped(sa_exc.ProgrammingError, "42P01", 'relation "jobs" does not exist'))
    assert error.message == 'relation "jobs" does not exist (run `bulkops migrate`)'


def test_invalidated_connection_is_unavailable() -> None:
    exc = sa_exc.DBAPIError("SELECT 1", {}, FakePgError("server closed", None), False, True)
    assert type(translate(exc)) is DatabaseUnavailable


@pytest.mark.parametrize(
    "raw",
    [
        # what copy_expert raises (unwrapped by SQLAlchemy) when the server goes away
        psycopg2.OperationalError("server closed the connection unexpectedly\n\tThis probably"),
        psycopg2.InterfaceError("connection already closed"),
    ],
)
def test_raw_psycopg2_connection_errors_are_retryable(raw: psycopg2.Error) -> None:
    # Given a driver error with no SQLSTATE, as a lost connection gives
    assert raw.pgcode is None
    # Then it is an outage to retry, not bad data that fails the job for good
    error = translate(raw)
    assert type(error) is DatabaseUnavailable
    assert "\n" not in error.message


def test_raw_psycopg2_integrity_error_is_data_error() -> None:
    assert type(translate(psycopg2.IntegrityError("duplicate key"))) is DataError


def test_sqlstate_wins_over_exception_class() -> None:
    # psycopg2 raises a serialization failure as an OperationalError subclass:
    # it is a conflict to retry, not an outage.
    assert type(translate(wrapped(sa_exc.OperationalError, "40001"))) is ConcurrencyConflict


def test_bulkops_errors_pass_through_unchanged() -> None:
    original = JobNotFound("no job with id 3")
    assert translate(original) is original


def test_translated_keeps_the_cause() -> None:
    driver_error = wrapped(sa_exc.IntegrityError, "23505", "duplicate key value")
    with pytest.raises(DataError) as info, translated():
        raise driver_error
    assert info.value.__cause__ is driver_error
    assert info.value.message == "duplicate key value"


def test_translated_leaves_other_exceptions_alone() -> None:
    with pytest.raises(KeyError), translated():
        raise KeyError("not a driver error")
