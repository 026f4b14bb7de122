"""Per-row validation of parsed import records, before anything touches the database.

Each input record ends in exactly one of the two lists a validator returns:
a clean row ready to load, or a :class:`RowError` saying which column is wrong
and why. Whether a todo's owner exists is checked later, against the database.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from worker.errors import InputFormatError, UsageError
from worker.models import STATUSES, TITLE_MAX, TodoStatus
from worker.parsing import Record

TODO_COLUMNS = ("title", "status", "owner_email")  # required in a CSV header
TODO_OPTIONAL_COLUMNS = ("created_at",)
USER_COLUMNS = ("email", "name")
EMAIL_MAX = 320  # users.email is varchar(320)
NAME_MAX = 200  # users.name is varchar(200)

_TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "todos": (TODO_COLUMNS, TODO_OPTIONAL_COLUMNS),
    "users": (USER_COLUMNS, ()),
}


@dataclass(frozen=True)
class RowError:
    line: int
    column: str | None
    reason: str
    raw: str


@dataclass(frozen=True)
class TodoRow:
    line: int
    title: str
    status: str
    owner_email: str  # stripped, lower-cased
    created_at: datetime | None  # timezone-aware UTC, or None for "now"
    raw: str


@dataclass(frozen=True)
class UserRow:
    line: int
    email: str  # stripped, lower-cased
    name: str
    raw: str


def _table(table: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        return _TABLES[table]
    except KeyError:
        raise UsageError(f"unknown table {table!r}; expected one of {', '.join(_TABLES)}") from None


def required_columns(table: str) -> tuple[str, ...]:
    return _table(table)[0]


def check_header(table: str, header: list[str]) -> None:
    """Raise InputFormatError naming every missing required and every unknown column.

    Columns whose names start with '_' (e.g. ``_line``, ``_error`` in a rejects
    export) are ignored.
    """
    required, optional = _table(table)
    present = [name for name in header if not name.startswith("_")]
    problems = []
    missing = [name for name in required if name not in present]
    if missing:
        problems.append(f"missing required column(s): {', '.join(missing)}")
    unknown = [name for name in present if name not in required + optional]
    if unknown:
        expected = ", ".join(required + optional)
        problems.append(f"unknown column(s): {', '.join(unknown)} (expected {expected})")
    if problems:
        raise InputFormatError("; ".join(problems))


def parse_timestamp(text: str) -> datetime:
    """Parse ISO 8601 (a trailing 'Z' allowed) to an aware UTC datetime; naive means UTC.

    Raises ValueError when the text is not a timestamp.
    """
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


# --- single fields -----------------------------------------------------------------


class _Invalid(Exception):
    """A row is rejected: which column, and why."""

    def __init__(self, column: str, reason: str) -> None:
        super().__init__(reason)
        self.column = column
        self.reason = reason


def _show(value: str, limit: int = 60) -> str:
    """Quote a value for a message, shortened so a huge value does not bloat it."""
    return f"'{value}'" if len(value) <= limit else f"'{value[:limit]}…'"


def _no_nul(values: dict[str, str], columns: Iterable[str]) -> None:
    for column in columns:
        if "\x00" in values.get(column, ""):
            raise _Invalid(column, f"{column} contains a NUL byte")


def _required_text(values: dict[str, str], column: str, limit: int) -> str:
    """The value exactly as given; rejected when missing, blank or too long."""
    value = values.get(column)
    if value is None:
        raise _Invalid(column, f"{column} is missing")
    if not value.strip():
        raise _Invalid(column, f"{column} is empty")
    if len(value) > limit:
        raise _Invalid(column, f"{column} is {len(value)} characters, the limit is {limit}")
    return value


# re's \s matches exactly the characters for which str.isspace() is true.
_SPACE = re.compile(r"\s")
_STATUS_SET = frozenset(STATUSES)
_ACTIVE = TodoStatus.ACTIVE.value


def _email(values: dict[str, str], column: str) -> str:
    value = values.get(column)
    if value is None:
        raise _Invalid(column, f"{column} is missing")
    email = value.strip().lower()
    if not email:
        raise _Invalid(column, f"{column} is empty")
    if len(email) > EMAIL_MAX:
        raise _Invalid(column, f"{column} is {len(email)} characters, the limit is {EMAIL_MAX}")
    local, at, domain = email.partition("@")
    if not (at and local and domain) or "@" in domain or _SPACE.search(email):
        raise _Invalid(column, f"{column} {_show(value.strip())} is not a valid email address")
    return email


def _status(values: dict[str, str]) -> str:
    value = values.get("status", "").strip()
    if not value:
        return TodoStatus.ACTIVE.value
    if value.lower() not in STATUSES:
        raise _Invalid("status", f"status {_show(value)} is not one of {', '.join(STATUSES)}")
    return value.lower()


def _created_at(values: dict[str, str]) -> datetime | None:
    value = values.get("created_at", "").strip()
    if not value:
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        raise _Invalid(
            "created_at", f"created_at {_show(value)} is not an ISO 8601 timestamp"
        ) from None


# --- rows --------------------------------------------------------------------------


def _todo_row(rec: Record, values: dict[str, str]) -> TodoRow:
    _no_nul(values, TODO_COLUMNS + TODO_OPTIONAL_COLUMNS)
    title = _required_text(values, "title", TITLE_MAX)
    status = _status(values)
    owner_email = _email(values, "owner_email")
    return TodoRow(rec.line, title, status, owner_email, _created_at(values), rec.raw)


def _user_row(rec: Record, values: dict[str, str]) -> UserRow:
    _no_nul(values, USER_COLUMNS)
    email = _email(values, "email")
    name = _required_text(values, "name", NAME_MAX)
    return UserRow(rec.line, email, name, rec.raw)


# --- fast paths: the common, valid row ---------------------------------------------
#
# Each returns the row the full builder would return, or None when anything is
# unusual (a NUL, a missing, blank, too long or invalid value); the caller then
# runs the full builder, which gives the exact error. They never raise _Invalid.


def _quick_email(value: str | None) -> str | None:
    return None if value is None else _quick_email_text(value)


@functools.lru_cache(maxsize=1 << 16)  # owners repeat: a chunk of 20k rows has few of them
def _quick_email_text(value: str) -> str | None:
    if "\x00" in value:
        return None
    email = value.strip().lower()
    if not email or len(email) > EMAIL_MAX:
        return None
    local, at, domain = email.partition("@")
    if not (at and local and domain) or "@" in domain or _SPACE.search(email):
        return None
    return email


def _quick_todo(rec: Record, values: dict[str, str]) -> TodoRow | None:
    get = values.get
    title = get("title")
    if title is None or "\x00" in title or len(title) > TITLE_MAX or not title.strip():
        return None
    status = get("status")
    if status is None or status == "":
        status = _ACTIVE
    elif status not in _STATUS_SET:
        if "\x00" in status:
            return None
        value = status.strip()
        if not value:
            status = _ACTIVE
        else:
            status = value.lower()
            if status not in _STATUS_SET:
                return None
    owner_email = _quick_email(get("owner_email"))
    if owner_email is None:
        return None
    created = get("created_at")
    created_at = None
    if created:
        if "\x00" in created:
            return None
        created = created.strip()
        if created:
            try:
                created_at = parse_timestamp(created)
            except ValueError:
                return None
    return TodoRow(rec.line, title, status, owner_email, created_at, rec.raw)


def _quick_user(rec: Record, values: dict[str, str]) -> UserRow | None:
    get = values.get
    email = _quick_email(get("email"))
    if email is None:
        return None
    name = get("name")
    if name is None or "\x00" in name or len(name) > NAME_MAX or not name.strip():
        return None
    return UserRow(rec.line, email, name, rec.raw)


_Row = TypeVar("_Row", TodoRow, UserRow)


def _validate(
    records: Iterable[Record],
    quick: Callable[[Record, dict[str, str]], _Row | None],
    build: Callable[[Record, dict[str, str]], _Row],
    key: Callable[[_Row], Hashable],
    key_column: str,
    dedupe: bool,
) -> tuple[list[_Row], list[RowError]]:
    """Build rows; reject unreadable and invalid records and later duplicates of a key."""
    rows: list[_Row] = []
    errors: list[RowError] = []
    first_line: dict[Hashable, int] = {}
    add_row = rows.append
    add_error = errors.append
    for rec in records:
        values = rec.values
        if values is None:
            reason = rec.error or "the record could not be read"
            add_error(RowError(rec.line, rec.column, reason, rec.raw))
            continue
        row = quick(rec, values)
        if row is None:
            try:
                row = build(rec, values)
            except _Invalid as exc:
                add_error(RowError(rec.line, exc.column, exc.reason, rec.raw))
                continue
        row_key = key(row) if dedupe else None
        if row_key is None:
            add_row(row)
            continue
        if row_key in first_line:
            reason = f"duplicate of line {first_line[row_key]} in this file"
            add_error(RowError(rec.line, key_column, reason, rec.raw))
            continue
        first_line[row_key] = rec.line
        add_row(row)
    return rows, errors


def validate_todos(
    records: Iterable[Record], dedupe: bool = True
) -> tuple[list[TodoRow], list[RowError]]:
    """Validate todo records; duplicates are by (title, owner_email), the first one kept.

    With ``dedupe=False`` duplicates are left to the caller (an import decides
    them across the whole file, see :mod:`worker.duplicates`).
    """
    return _validate(records, _quick_todo, _todo_row, todo_key, "title", dedupe)


def validate_users(
    records: Iterable[Record], dedupe: bool = True
) -> tuple[list[UserRow], list[RowError]]:
    """Validate user records; duplicates are by email, the first one kept."""
    return _validate(records, _quick_user, _user_row, user_key, "email", dedupe)


def todo_key(row: TodoRow) -> tuple[str, ...]:
    """A todo's natural key as the file gives it: the title, and the owner's email."""
    return (row.title, row.owner_email)


def user_key(row: UserRow) -> tuple[str, ...]:
    return (row.email,)


def key_columns(table: str) -> tuple[str, ...]:
    """The input columns a table's natural key is made of."""
    return ("title", "owner_email") if table == "todos" else ("email",)


def raw_key(table: str, values: dict[str, str]) -> tuple[str, ...] | None:
    """The natural key a valid row with these raw values would have (as the row keys above).

    None when a key column is missing. Used to find duplicates before
    validating: a row that turns out invalid is no duplicate of anything.
    """
    parts = [values.get(name) for name in key_columns(table)]
    if any(p is None for p in parts):
        return None
    return key_maker(table)(parts)  # type: ignore[arg-type]


def _todo_raw_key(parts: Sequence[str]) -> tuple[str, ...]:
    return (parts[0], parts[1].strip().lower())


def _user_raw_key(parts: Sequence[str]) -> tuple[str, ...]:
    return (parts[0].strip().lower(),)


def key_maker(table: str) -> Callable[[Sequence[str]], tuple[str, ...]]:
    """Raw values of :func:`key_columns`, in order -> the key a valid row would have."""
    return _todo_raw_key if table == "todos" else _user_raw_key
