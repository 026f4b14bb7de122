"""Unit tests of row validation (worker.target_rows) on the built-in todos and users targets.

The example's rules, derived from its SQLModel classes: a title of 1 to 200
characters, a known status (blank: the default, ``active``), emails checked
and normalised, timestamps naive (UTC), aware or invalid, NUL bytes and
wrong field counts rejected. No services.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from worker import targets
from worker.errors import InputFormatError, UsageError
from worker.models import STATUSES
from worker.parsing import Record, plan_chunks, read_chunk, read_header
from worker.target_rows import RowError, RowValidator, TypedRow, check_header, parse_timestamp

EXAMPLE = targets.Registry(targets.builtin_targets())
TODOS, USERS = EXAMPLE.get("todos"), EXAMPLE.get("users")
_todos, _users = RowValidator(TODOS), RowValidator(USERS)

_line = iter(range(2, 10**9))


def validate_todos(records: list[Record]) -> tuple[list[TypedRow], list[RowError]]:
    return _todos.validate(records)


def validate_users(records: list[Record]) -> tuple[list[TypedRow], list[RowError]]:
    return _users.validate(records)


def fields(row: TypedRow, spec: targets.TargetSpec = TODOS) -> dict[str, Any]:
    """A typed row's values by column name."""
    return dict(zip(spec.file_columns, row.values, strict=True))


def todo(**values: str | None) -> Record:
    base: dict[str, str | None] = {
        "title": "Buy milk",
        "status": "active",
        "owner_email": "ann@example.com",
    }
    base.update(values)
    return Record(next(_line), {k: v for k, v in base.items() if v is not None}, "raw text")


def one_error(record: Record) -> RowError:
    rows, errors = validate_todos([record])
    assert rows == [] and len(errors) == 1
    return errors[0]


def one_row(record: Record) -> dict[str, Any]:
    rows, errors = validate_todos([record])
    assert errors == [] and len(rows) == 1
    assert rows[0].line == record.line and rows[0].raw == record.raw
    return fields(rows[0])


# --- headers -----------------------------------------------------------------------


def test_required_and_optional_columns() -> None:
    # status has a default ('active') and created_at one (now()): a file may leave them out
    assert TODOS.required_columns == ("title", "owner_email")
    assert TODOS.optional_columns == ("status", "created_at")
    assert USERS.required_columns == USERS.file_columns == ("email", "name")
    with pytest.raises(UsageError, match="unknown table 'things'"):
        EXAMPLE.get("things")


def test_check_header_accepts_known_and_underscore_columns() -> None:
    check_header(TODOS, ["_line", "title", "status", "owner_email", "created_at", "_error"])
    check_header(TODOS, ["title", "owner_email"])
    check_header(USERS, ["name", "email"])


def test_check_header_names_every_missing_column() -> None:
    with pytest.raises(InputFormatError) as exc:
        check_header(TODOS, ["status"])
    assert exc.value.message == "missing required column(s): title, owner_email"


def test_check_header_names_unknown_columns() -> None:
    with pytest.raises(InputFormatError, match=r"unknown column\(s\): owner, Colour"):
        check_header(TODOS, ["title", "status", "owner_email", "owner", "Colour"])
    with pytest.raises(InputFormatError, match="missing required column.*: name.*unknown.*: nme"):
        check_header(USERS, ["email", "nme"])


# --- records that could not be parsed ----------------------------------------------


def test_unparseable_record_becomes_a_row_error() -> None:
    rec = Record(7, None, "a,b", error="expected 3 fields, found 2", column=None)
    bad_utf8 = Record(8, None, "x\ufffd", error="invalid UTF-8 at ...", column="title")
    assert validate_todos([rec, bad_utf8]) == (
        [],
        [
            RowError(7, None, "expected 3 fields, found 2", "a,b"),
            RowError(8, "title", "invalid UTF-8 at ...", "x\ufffd"),
        ],
    )
    assert validate_users([rec])[1] == [RowError(7, None, "expected 3 fields, found 2", "a,b")]


# --- title -------------------------------------------------------------------------


@pytest.mark.parametrize("title", ["", "   ", "\t\n"])
def test_title_empty(title: str) -> None:
    err = one_error(todo(title=title))
    assert (err.column, err.reason, err.raw) == ("title", "title is empty", "raw text")


def test_title_missing_key() -> None:
    assert one_error(todo(title=None)).reason == "title is missing"


def test_title_kept_exactly() -> None:
    assert one_row(todo(title="  spaced out  "))["title"] == "  spaced out  "


def test_title_length_is_in_characters() -> None:
    assert one_row(todo(title="😀" * 200))["title"] == "😀" * 200
    err = one_error(todo(title="😀" * 201))
    assert (err.column, err.reason) == ("title", "title is 201 characters, the limit is 200")


def test_title_with_nul_is_rejected() -> None:
    err = one_error(todo(title="a\x00b"))
    assert (err.column, err.reason) == ("title", "title contains a NUL byte")


@pytest.mark.parametrize(
    "title",
    [
        "'); DROP TABLE todos; --",
        "Robert'); DROP TABLE users;--",
        'say "hi" \\ back\\slash',
        "tab\there",
        "emoji 😀👍🏽 and 中文",
        "%s %(x)s {0} $1 :name ?",
        "line\nbreak",
    ],
)
def test_hostile_titles_pass_through_unchanged(title: str) -> None:
    assert one_row(todo(title=title))["title"] == title


# --- status ------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["", "  "])
def test_status_defaults_to_active(status: str) -> None:
    assert one_row(todo(status=status))["status"] == "active"


def test_status_missing_key_defaults_to_active() -> None:
    assert one_row(todo(status=None))["status"] == "active"


@pytest.mark.parametrize("status", [*STATUSES, "COMPLETED", " In_Progress "])
def test_status_is_case_insensitive_and_normalized(status: str) -> None:
    assert one_row(todo(status=status))["status"] == status.strip().lower()


def test_status_unknown() -> None:
    err = one_error(todo(status="done"))
    assert err.column == "status"
    assert err.reason == "status 'done' is not one of active, in_progress, completed, archived"


# --- owner_email / email -----------------------------------------------------------


def test_owner_email_normalized() -> None:
    assert one_row(todo(owner_email="  Ann@Example.COM "))["owner_email"] == "ann@example.com"


@pytest.mark.parametrize(
    "email", ["ann", "@example.com", "ann@", "a@b@c", "ann smith@example.com", "ann@exa\tmple.com"]
)
def test_owner_email_invalid(email: str) -> None:
    err = one_error(todo(owner_email=email))
    assert err.column == "owner_email"
    assert err.reason == f"owner_email '{email.strip()}' is not a valid email address"


def test_owner_email_missing_or_empty() -> None:
    assert one_error(todo(owner_email="")).reason == "owner_email is empty"
    missing = todo(owner_email=None)
    assert one_error(missing).reason == "owner_email is missing"


def test_email_too_long() -> None:
    err = one_error(todo(owner_email="a" * 310 + "@example.com"))
    assert err.reason == "owner_email is 322 characters, the limit is 320"


# --- created_at --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", None),
        ("   ", None),
        ("2024-03-01T12:30:00Z", datetime(2024, 3, 1, 12, 30, tzinfo=UTC)),
        ("2024-03-01T12:30:00+02:00", datetime(2024, 3, 1, 10, 30, tzinfo=UTC)),
        ("2024-03-01 12:30:00", datetime(2024, 3, 1, 12, 30, tzinfo=UTC)),
        ("2024-03-01", datetime(2024, 3, 1, tzinfo=UTC)),
        (" 2024-03-01T12:30:00.123456z ", datetime(2024, 3, 1, 12, 30, 0, 123456, tzinfo=UTC)),
    ],
)
def test_created_at(text: str, expected: datetime | None) -> None:
    created = one_row(todo(created_at=text))["created_at"]
    assert created == expected
    if created is not None:
        assert created.utcoffset() is not None and created.tzinfo == UTC


def test_created_at_optional() -> None:
    assert one_row(todo())["created_at"] is None


@pytest.mark.parametrize("text", ["yesterday", "2024-13-01", "01/02/2024", "2024-03-01T25:00"])
def test_created_at_invalid(text: str) -> None:
    err = one_error(todo(created_at=text))
    assert (err.column, err.reason) == (
        "created_at",
        f"created_at '{text}' is not an ISO 8601 timestamp",
    )


def test_parse_timestamp_is_public() -> None:
    assert parse_timestamp("2024-01-01T00:00:00Z") == datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_timestamp("soon")


# --- duplicates --------------------------------------------------------------------


def test_todo_duplicates_keep_the_first() -> None:
    records = [
        Record(2, {"title": "A", "status": "", "owner_email": "x@y.z"}, "r2"),
        Record(3, {"title": "A", "status": "completed", "owner_email": "X@Y.Z "}, "r3"),
        Record(4, {"title": "a", "status": "", "owner_email": "x@y.z"}, "r4"),  # other title
        Record(5, {"title": "A", "status": "", "owner_email": "other@y.z"}, "r5"),  # other owner
        Record(6, {"title": "A", "status": "", "owner_email": "x@y.z"}, "r6"),
    ]
    rows, errors = validate_todos(records)
    assert [r.line for r in rows] == [2, 4, 5]
    assert errors == [
        RowError(3, "title", "duplicate of line 2 in this file", "r3"),
        RowError(6, "title", "duplicate of line 2 in this file", "r6"),
    ]


def test_a_rejected_row_does_not_make_a_later_one_a_duplicate() -> None:
    records = [
        Record(2, {"title": "A", "status": "bogus", "owner_email": "x@y.z"}, "r2"),
        Record(3, {"title": "A", "status": "", "owner_email": "x@y.z"}, "r3"),
    ]
    rows, errors = validate_todos(records)
    assert [r.line for r in rows] == [3] and [e.line for e in errors] == [2]


# --- users -------------------------------------------------------------------------


def test_users() -> None:
    records = [
        Record(2, {"email": " Ann@Example.com", "name": "Ann"}, "r2"),
        Record(3, {"email": "ann@example.COM", "name": "Ann again"}, "r3"),
        Record(4, {"email": "bob@example.com", "name": "  "}, "r4"),
        Record(5, {"email": "not-an-email", "name": "Carl"}, "r5"),
        Record(6, {"email": "dee@example.com", "name": "D" * 201}, "r6"),
        Record(7, {"email": "eve@example.com"}, "r7"),
        Record(8, {"email": "fay@example.com", "name": "F\x00"}, "r8"),
        Record(9, {"email": "gus@example.com", "name": "'); DROP TABLE users; -- 😀"}, "r9"),
    ]
    rows, errors = validate_users(records)
    assert rows == [
        TypedRow(2, ("ann@example.com", "Ann"), "r2"),
        TypedRow(9, ("gus@example.com", "'); DROP TABLE users; -- 😀"), "r9"),
    ]
    assert [(e.line, e.column, e.reason) for e in errors] == [
        (3, "email", "duplicate of line 2 in this file"),
        (4, "name", "name is empty"),
        (5, "email", "email 'not-an-email' is not a valid email address"),
        (6, "name", "name is 201 characters, the limit is 200"),
        (7, "name", "name is missing"),
        (8, "name", "name contains a NUL byte"),
    ]


# --- whole files, through the parser ------------------------------------------------


def _read(path: Path, fmt: str = "csv") -> list[Record]:
    header = read_header(path, fmt)[0]
    return [r for s in plan_chunks(path, fmt, 3) for r in read_chunk(path, fmt, s, header)]


MESSY = (
    "\ufefftitle,status,owner_email,created_at,_error\r\n"
    "ok,active,a@b.c,,\r\n"
    "'); DROP TABLE todos; --,ACTIVE,A@B.C,2024-01-01T00:00:00Z,\r\n"
    '"quoted, ""comma""\nand newline",in_progress,a@b.c,,old error\r\n'
    ",active,a@b.c,,\r\n"
    "x,done,a@b.c,,\r\n"
    "y,active,nobody,,\r\n"
    "z,active,a@b.c,yesterday,\r\n"
    "too,many,fields,here,now,x\r\n"
    "\r\n"
    "ok,completed,a@b.c,,\r\n"
    "nul\x00,active,a@b.c,,\r\n"
)


def test_every_record_ends_in_exactly_one_list(tmp_path: Path) -> None:
    path = tmp_path / "messy.csv"
    path.write_bytes(MESSY.encode() + b"bad \xff utf8,active,a@b.c,,\r\n" + b'"open,active')
    header = read_header(path, "csv")[0]
    check_header(TODOS, header)
    records = _read(path)
    assert len(records) == 12
    rows, errors = validate_todos(records)
    assert len(rows) + len(errors) == len(records)
    assert sorted([r.line for r in rows] + [e.line for e in errors]) == [r.line for r in records]
    assert [fields(r)["title"] for r in rows] == [
        "ok",
        "'); DROP TABLE todos; --",
        'quoted, "comma"\nand newline',
    ]
    assert {e.line: e.column for e in errors} == {
        6: "title",  # empty
        7: "status",
        8: "owner_email",
        9: "created_at",
        10: None,  # field count
        12: "title",  # duplicate of line 2
        13: "title",  # NUL
        14: "title",  # invalid UTF-8
        15: None,  # unterminated quote
    }
    assert next(e for e in errors if e.line == 12).reason == "duplicate of line 2 in this file"


def test_huge_title_is_parsed_then_rejected(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    big = "x" * (10 * 1024 * 1024)
    path.write_text(f'title,status,owner_email\n"{big}",active,a@b.c\nsmall,,a@b.c\n')
    rows, errors = validate_todos(_read(path))
    assert [fields(r)["title"] for r in rows] == ["small"]
    assert [(e.line, e.column, e.reason) for e in errors] == [
        (2, "title", f"title is {len(big)} characters, the limit is 200")
    ]


def test_jsonl_todos(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"title": "a", "owner_email": "a@b.c", "status": null, "_error": "x"}\n'
        '{"title": 5, "owner_email": "a@b.c", "created_at": "2024-05-05T05:05:05+05:00"}\n'
        '{"owner_email": "a@b.c"}\n'
    )
    rows, errors = validate_todos(_read(path, "jsonl"))
    assert [r.values for r in rows] == [
        ("a", "active", "a@b.c", None),
        ("5", "active", "a@b.c", datetime(2024, 5, 5, 0, 5, 5, tzinfo=UTC)),
    ]
    assert [(e.line, e.reason) for e in errors] == [(3, "title is missing")]


# --- every combination of values, in one chunk -------------------------------------

_TITLES = [None, "t", "", "   ", "a\x00b", "x" * 200, "x" * 201, " padded "]
_STATUSES = [None, "", " ", "active", "ACTIVE", " completed ", "done", "arch\x00ived"]
_EMAILS = [None, "", " ", "a@b.c", " A@B.C ", "a b@c.d", "a@b@c", "@b", "a@", "a\u00a0@b.c"]
_EMAILS += ["a@b.c\x00", "x" * 316 + "@b.c", "x" * 317 + "@b.c"]
_CREATED = [None, "", " ", "2024-01-02T03:04:05Z", "2024-01-02 03:04", "nope", "2024\x00"]


def _records() -> list[Record]:
    records: list[Record] = []
    for i, (title, status, email, created) in enumerate(
        (t, s, e, c)
        for t in _TITLES
        for s in _STATUSES
        for e in _EMAILS
        for c in _CREATED[:: 1 if t == "t" else 3]
    ):
        values = {"title": title, "status": status, "owner_email": email, "created_at": created}
        values = {k: v for k, v in values.items() if v is not None}
        records.append(Record(i + 2, values, f"raw {i}"))
    return records


def test_a_chunk_gives_each_record_what_it_gives_alone() -> None:
    """Converters compiled once and cached per value: nothing leaks from one row to the next."""
    records = _records()
    alone: dict[int, TypedRow | RowError] = {}
    for rec in records:
        rows, errors = _todos.validate([rec])
        alone[rec.line] = [*rows, *errors][0]
    rows, errors = _todos.validate(records + records, dedupe=False)
    together = [*rows, *errors]
    assert sorted(x.line for x in together) == sorted(2 * [r.line for r in records])
    assert all(x == alone[x.line] for x in together)
    assert rows and errors


def test_a_later_copy_of_a_valid_row_is_a_duplicate_of_the_first() -> None:
    records = _records()
    copies = [Record(r.line + len(records), r.values, r.raw) for r in records]
    rows, errors = _todos.validate(records + copies)
    expected: dict[int, TypedRow | RowError] = {}
    first: dict[tuple[Any, ...], int] = {}
    for rec in records + copies:
        found, refused = _todos.validate([rec])
        if refused:
            expected[rec.line] = refused[0]
            continue
        key = _todos.key(found[0].values)
        if key in first:
            reason = f"duplicate of line {first[key]} in this file"
            expected[rec.line] = RowError(rec.line, "title", reason, rec.raw)
        else:
            first[key] = rec.line
            expected[rec.line] = found[0]
    assert {x.line: x for x in [*rows, *errors]} == expected
    assert len(first) > 1 and len(rows) == len(first)
