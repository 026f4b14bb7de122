"""Validation of raw records against a target: typed tuples and per-row errors.

Derived once per target from its :class:`~worker.targets.TargetSpec`: one
converter function per column (``str -> value``, raising :class:`Invalid` with
the reason), compiled when the validator is built and then called in a plain
loop. A row's values come back in ``spec.columns`` order (the file's columns;
a lookup's file columns hold the parent's key values, resolved later by
:mod:`worker.lookups`), typed for ``COPY``:

- ``str`` as given (an email stripped and lower-cased), ``int``, ``float``
  (finite), ``Decimal`` (within precision and scale), ``bool``, ``date``,
  ``datetime`` (aware, UTC: **a naive value means UTC**), ``UUID``, an
  Enum's stored value, and JSON as compact JSON text (so COPY stores it as is).
- An empty value (or a missing column) is *missing*: a constant server default
  or Python-side default is filled in; a default the database computes
  (``now()``) stays ``None`` for the loader; a required column is a reject;
  a nullable one is ``None``.

Each input record ends in exactly one of the two lists a validator returns:
a typed row ready to load, or a :class:`RowError` saying which column is wrong
and why. Whether a lookup's parent exists is checked later, against the
database (:mod:`worker.lookups`).
"""

from __future__ import annotations

import functools
import json
import math
import re
import uuid
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from worker.errors import InputFormatError
from worker.parsing import Record
from worker.targets import INT_RANGES, ColumnSpec, TargetSpec

_SPACE = re.compile(r"\s")
_TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "off", "0"})
_MISSING = object()
_INVALID = object()  # a raw key value that no valid row has


@dataclass(frozen=True)
class RowError:
    """A rejected record: its line, the column at fault (None: the whole record), why."""

    line: int
    column: str | None
    reason: str
    raw: str


def parse_timestamp(text: str) -> datetime:
    """Parse ISO 8601 (a trailing 'Z' allowed) to an aware UTC datetime; naive means UTC.

    Raises ValueError when the text is not a timestamp.
    """
    try:  # the common case first: no spaces around, and Python 3.11 reads a trailing 'Z'
        parsed = datetime.fromisoformat(text)
    except ValueError:
        value = text.strip()
        if value[-1:] in ("Z", "z"):
            value = value[:-1] + "+00:00"
        parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is UTC:
        return parsed
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


class Invalid(Exception):
    """A value is refused; ``reason`` says why (with the column's name)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)  # not frozen, as parsing.Record: built once per valid row
class TypedRow:
    line: int
    values: tuple[Any, ...]  # in TargetSpec.columns order
    raw: str


def _show(value: str, limit: int = 60) -> str:
    return f"'{value}'" if len(value) <= limit else f"'{value[:limit]}…'"


def check_header(spec: TargetSpec, header: Sequence[str]) -> None:
    """Raise InputFormatError naming every missing required and every unknown column.

    Columns whose names start with '_' (a rejects export's ``_line``,
    ``_error``) are ignored.
    """
    present = [n for n in header if not n.startswith("_")]
    problems = []
    missing = [n for n in spec.required_columns if n not in present]
    if missing:
        problems.append(f"missing required column(s): {', '.join(missing)}")
    unknown = [n for n in present if n not in spec.file_columns]
    if unknown:
        expected = ", ".join(spec.file_columns)
        problems.append(f"unknown column(s): {', '.join(unknown)} (expected {expected})")
    if problems:
        raise InputFormatError("; ".join(problems))


# --- converters: one per column, built once ------------------------------------------


def _text_converter(c: ColumnSpec) -> Callable[[str], Any]:
    name, limit = c.name, c.max_length

    if c.email:

        def email(value: str) -> str:
            text = value.strip().lower()
            if limit is not None and len(text) > limit:
                raise Invalid(f"{name} is {len(text)} characters, the limit is {limit}")
            local, at, domain = text.partition("@")
            if not (at and local and domain) or "@" in domain or _SPACE.search(text):
                raise Invalid(f"{name} {_show(value.strip())} is not a valid email address")
            return text

        return email

    def text(value: str) -> str:
        if limit is not None and len(value) > limit:
            raise Invalid(f"{name} is {len(value)} characters, the limit is {limit}")
        return value

    return text


def _int_converter(c: ColumnSpec) -> Callable[[str], Any]:
    name = c.name
    low, high = INT_RANGES[c.int_bits or 64]

    def to_int(value: str) -> int:
        text = value.strip()
        body = text[1:] if text[:1] in "+-" else text
        if not (body.isascii() and body.isdigit()):
            raise Invalid(f"{name} {_show(text)} is not an integer")
        number = int(text)
        if not low <= number <= high:
            raise Invalid(f"{name} {number} is out of range ({low} to {high})")
        return number

    return to_int


def _float_converter(c: ColumnSpec) -> Callable[[str], Any]:
    name = c.name

    def to_float(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise Invalid(f"{name} {_show(value.strip())} is not a number") from None
        if not math.isfinite(number):
            raise Invalid(f"{name} {_show(value.strip())} is not a finite number")
        return number

    return to_float


def _decimal_converter(c: ColumnSpec) -> Callable[[str], Any]:
    name, precision, scale = c.name, c.precision, c.scale or 0

    def to_decimal(value: str) -> Decimal:
        text = value.strip()
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise Invalid(f"{name} {_show(text)} is not a decimal number") from None
        if not number.is_finite():
            raise Invalid(f"{name} {_show(text)} is not a finite number")
        if precision is None:
            return number
        exponent = number.as_tuple().exponent
        assert isinstance(exponent, int)
        if -exponent > scale:
            raise Invalid(f"{name} {_show(text)} has more than {scale} decimal places")
        if number.adjusted() + 1 > precision - scale:
            limit = precision - scale
            raise Invalid(f"{name} {_show(text)} has more than {limit} digits before the point")
        return number

    return to_decimal


def _bool_converter(c: ColumnSpec) -> Callable[[str], Any]:
    name = c.name

    def to_bool(value: str) -> bool:
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise Invalid(f"{name} {_show(value.strip())} is not a boolean (true/false)")

    return to_bool


def _date_converter(c: ColumnSpec) -> Callable[[str], Any]:
    name = c.name

    def to_date(value: str) -> date:
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            raise Invalid(f"{name} {_show(value.strip())} is not an ISO 8601 date") from None

    return to_date


def _datetime_converter(c: ColumnSpec) -> Callable[[str], Any]:
    name = c.name

    def to_datetime(value: str) -> datetime:
        try:
            return parse_timestamp(value)
        except ValueError:
            raise Invalid(f"{name} {_show(value.strip())} is not an ISO 8601 timestamp") from None

    return to_datetime


def _uuid_converter(c: ColumnSpec) -> Callable[[str], Any]:
    name = c.name

    def to_uuid(value: str) -> uuid.UUID:
        try:
            return uuid.UUID(value.strip())
        except ValueError:
            raise Invalid(f"{name} {_show(value.strip())} is not a UUID") from None

    return to_uuid


def _enum_converter(c: ColumnSpec) -> Callable[[str], Any]:
    name, choices = c.name, frozenset(c.choices)
    folded = {v.lower(): v for v in c.choices}
    listed = ", ".join(c.choices)

    def to_enum(value: str) -> str:
        if value in choices:
            return value
        found = folded.get(value.strip().lower())
        if found is None:
            raise Invalid(f"{name} {_show(value.strip())} is not one of {listed}")
        return found

    return to_enum


def _reject_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a JSON value (JSON has no NaN/Infinity)")


_JSON = json.JSONDecoder(parse_constant=_reject_constant)


def _json_converter(c: ColumnSpec) -> Callable[[str], Any]:
    """Checked with Python's parser, then kept as given: COPY stores JSON text as is."""
    name, shape = c.name, c.json_shape
    want = {"object": dict, "array": list}.get(shape or "")
    decode = _JSON.decode

    def to_json(value: str) -> str:
        try:
            obj = decode(value)
        except (ValueError, RecursionError) as exc:
            raise Invalid(f"{name} is not valid JSON: {exc}") from None
        if want is not None and type(obj) is not want:
            raise Invalid(f"{name} must be a JSON {shape}")
        return value

    return to_json


_BUILDERS: dict[str, Callable[[ColumnSpec], Callable[[str], Any]]] = {
    "str": _text_converter,
    "int": _int_converter,
    "float": _float_converter,
    "decimal": _decimal_converter,
    "bool": _bool_converter,
    "date": _date_converter,
    "datetime": _datetime_converter,
    "uuid": _uuid_converter,
    "enum": _enum_converter,
    "json": _json_converter,
}


def converter(c: ColumnSpec) -> Callable[[str], Any]:
    """``raw text -> typed value`` for one column; raises Invalid."""
    return _BUILDERS[c.kind](c)


def missing_value(c: ColumnSpec) -> Any:
    """What a missing value becomes: a default, None, or _MISSING for a required column."""
    if c.server_constant is not None:
        return converter(c)(c.server_constant)
    if c.default is not None:
        if c.kind == "json":
            return json.dumps(c.default, separators=(",", ":"))
        return c.default
    if c.default_factory is not None or c.default_sql is not None or not c.required:
        return None  # the factory is called per row; the database applies default_sql
    return _MISSING


# Columns whose values repeat within a chunk (emails, a lookup's keys, enums):
# their conversions are cached per validator.
_CACHE_SIZE = 1 << 16


def compile_column(c: ColumnSpec) -> Callable[[str | None], Any]:
    """``raw value or None -> typed value``, missing values and NULs included; raises Invalid."""
    convert = converter(c)
    if c.email or c.table_column is None or c.kind == "enum":
        convert = functools.lru_cache(maxsize=_CACHE_SIZE)(convert)
    name, blank, factory = c.name, missing_value(c), c.default_factory
    free_text = c.kind == "str" and not c.email  # spaces are a value, unless required

    def missing(value: str | None) -> Any:
        if factory is not None:
            return factory()
        if blank is _MISSING:
            raise Invalid(f"{name} is {'missing' if value is None else 'empty'}")
        return blank

    def column(value: str | None) -> Any:
        if not value:
            return missing(value)
        if "\x00" in value:
            raise Invalid(f"{name} contains a NUL byte")
        if value.isspace():
            if not free_text:
                return missing(value)
            if blank is _MISSING:
                raise Invalid(f"{name} is empty")
        return convert(value)

    return column


class RowValidator:
    """The validator of one target: converters compiled once, then one loop per chunk."""

    def __init__(self, spec: TargetSpec) -> None:
        self.spec = spec
        self.columns = tuple((c.name, compile_column(c)) for c in spec.columns)
        names = spec.file_columns
        self.key_positions = tuple(names.index(n) for n in spec.key_file_columns)

    def first_error(self, values: dict[str, str]) -> tuple[str, str] | None:
        """(column, reason) of a row's first invalid value, or None."""
        for name, column in self.columns:
            try:
                column(values.get(name))
            except Invalid as exc:
                return name, exc.reason
        return None

    def key(self, values: tuple[Any, ...]) -> Hashable:
        return tuple(values[i] for i in self.key_positions)

    def validate(
        self, records: Iterable[Record], dedupe: bool = True
    ) -> tuple[list[TypedRow], list[RowError]]:
        """Typed rows and rejects; with ``dedupe`` a later copy of a natural key is a reject."""
        rows: list[TypedRow] = []
        errors: list[RowError] = []
        first_line: dict[Hashable, int] = {}
        key_column = self.spec.key_file_columns[0]
        columns = self.columns
        positions = self.key_positions
        for rec in records:
            values = rec.values
            if values is None:
                reason = rec.error or "the record could not be read"
                errors.append(RowError(rec.line, rec.column, reason, rec.raw))
                continue
            get = values.get
            try:
                typed = tuple([column(get(name)) for name, column in columns])
            except Invalid:
                found = self.first_error(values)
                assert found is not None
                errors.append(RowError(rec.line, found[0], found[1], rec.raw))
                continue
            if dedupe:
                k = tuple([typed[i] for i in positions])
                if k in first_line:
                    reason = f"duplicate of line {first_line[k]} in this file"
                    errors.append(RowError(rec.line, key_column, reason, rec.raw))
                    continue
                first_line[k] = rec.line
            rows.append(TypedRow(rec.line, typed, rec.raw))
        return rows, errors


def raw_key_maker(spec: TargetSpec) -> Callable[[Sequence[str]], tuple[Any, ...] | None]:
    """Raw values of ``spec.key_file_columns`` -> the key a valid row would have (None: invalid).

    For finding duplicates before validation (worker.duplicates): the values are
    normalised as the validator does (an email lower-cased, ``1.50`` = ``1.5``).
    A free-text column's valid value is its raw text, so it is taken as it is
    (the plan makes a key for every record of the file: measured, half of its
    CPU went into validating titles); such a key of an invalid record is only
    a candidate that its chunk, which validates, turns down.
    """
    by_name = dict(RowValidator(spec).columns)
    kinds = {c.name: c for c in spec.columns}
    cols = [
        None if kinds[n].kind == "str" and not kinds[n].email else by_name[n]
        for n in spec.key_file_columns
    ]
    if all(c is None for c in cols):
        return tuple
    normalised = [i for i, c in enumerate(cols) if c is not None]
    if len(normalised) == 1:  # (title, owner_email): one call per record, no loop
        i = normalised[0]
        only = cols[i]
        assert only is not None

        seen: dict[str, Any] = {}  # raw -> normalised (emails repeat: one owner, many rows)

        def make_one(parts: Sequence[str]) -> tuple[Any, ...] | None:
            raw = parts[i]
            value = seen.get(raw, _MISSING)
            if value is _MISSING:
                try:
                    value = only(raw)
                except Invalid:
                    value = _INVALID
                if len(seen) < _CACHE_SIZE:
                    seen[raw] = value
            if value is _INVALID:
                return None
            key = list(parts)  # measured faster than slicing around i
            key[i] = value
            return tuple(key)

        return make_one

    def make(parts: Sequence[str]) -> tuple[Any, ...] | None:
        try:
            return tuple([p if c is None else c(p) for c, p in zip(cols, parts, strict=True)])
        except Invalid:
            return None

    return make
