"""Streaming readers for import files: CSV with a header, and JSON Lines.

Files may be far larger than memory, so nothing here reads a whole file. A
single byte-level scanner (worker.scanner) finds record boundaries at LF, CRLF
and (CSV) lone-CR line ends; :func:`plan_chunks` runs it
once over the file to cut it into chunks, and :func:`read_chunk` runs it again
over one chunk's byte range, so both always agree on where records are.

For CSV the scanner follows the csv module's quoting rules (RFC 4180 plus the
module's leniency): a quote opens a quoted field only at the start of a field,
so a stray ``"`` inside an unquoted field (``5" screen``) is a literal and does
not swallow the following lines. Each record's bytes are then decoded and
parsed on their own, so one bad record never affects another.
"""

from __future__ import annotations

import csv
import io
import json
import operator
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from worker.errors import InputFormatError, UsageError
from worker.scanner import MAX_RECORD_BYTES, RawRecord, scan, strip_newline
from worker.source import ConfinedFile

FORMATS = ("csv", "jsonl")

# What the readers read: a confined import file (worker.source), or a Path in tests and tools.
Source = ConfinedFile | Path

_RAW_PREVIEW_BYTES = 1024  # how much of an oversized record is kept as its raw text
_BOM = b"\xef\xbb\xbf"

# The default limit (131072 characters) would make a long field an exception;
# a long field must instead reach the validator and become a reject.
csv.field_size_limit(max(csv.field_size_limit(), MAX_RECORD_BYTES))


@dataclass(frozen=True)
class ChunkSpan:
    chunk_no: int  # 0-based
    start: int  # byte offset where the chunk's first record starts
    end: int  # byte offset just past the chunk's last record
    first_line: int  # 1-based physical line where the chunk's first record starts
    records: int  # number of records (data rows) in the chunk


# Not frozen: a frozen dataclass's __init__ sets each field through
# object.__setattr__ (measured 4x slower), and every chunk builds 20k records.
@dataclass(slots=True)
class Record:
    line: int  # 1-based physical line where the record starts (CSV header is line 1)
    values: dict[str, str] | None  # column -> raw value; None when unparseable
    raw: str  # the record's original text, without its trailing newline
    error: str | None = None  # why it could not be parsed, when values is None
    column: str | None = None  # which column the error is about, if known


def _check_format(fmt: str) -> bool:
    """Return True for CSV, False for JSONL; anything else is a usage error."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt == "csv"


def _data_start(f: BinaryIO) -> int:
    """Skip a UTF-8 byte order mark; return where the content starts."""
    f.seek(0)
    return len(_BOM) if f.read(len(_BOM)) == _BOM else 0


def _raw_text(rec: RawRecord) -> str:
    if rec.size > MAX_RECORD_BYTES:
        return rec.data[:_RAW_PREVIEW_BYTES].decode("utf-8", errors="replace") + "…"
    return strip_newline(rec.data).decode("utf-8", errors="replace")


# --- header and chunk planning -----------------------------------------------------


def _parse_csv_line(text: str) -> list[str]:
    """Parse one record's text; raise csv.Error with a human message if malformed."""
    try:
        rows = list(csv.reader([text], strict=True))
    except csv.Error as exc:
        msg = str(exc)
        if "expected after" in msg:
            msg = "text after a closing quote (a quote inside a quoted field must be doubled)"
        elif "new-line character" in msg:
            msg = "line break inside an unquoted field"
        raise csv.Error(f"malformed CSV: {msg}") from None
    if len(rows) != 1:
        raise csv.Error("malformed CSV: not exactly one record")
    return rows[0]


def read_header(path: Source, fmt: str) -> tuple[list[str], int]:
    """CSV: the header's column names and the byte offset just past it. JSONL: ([], 0).

    Raises InputFormatError for an empty file, an undecodable or malformed
    header, a column without a name, or duplicate column names.
    """
    if not _check_format(fmt):
        return [], 0
    with path.open("rb") as f:
        rec = next(scan(f, _data_start(f), 1, csv_mode=True, keep=True), None)
    if rec is None:
        raise InputFormatError(f"{path.name} is empty")
    if rec.blank:
        raise InputFormatError(f"{path.name}: the header (line 1) is empty")
    if not rec.terminated:
        raise InputFormatError(f"{path.name}: the header has an unterminated quoted field")
    if rec.size > MAX_RECORD_BYTES:
        raise InputFormatError(f"{path.name}: the header is larger than {_mib()} MiB")
    try:
        text = strip_newline(rec.data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFormatError(
            f"{path.name}: the header is not valid UTF-8 (byte offset {exc.start})"
        ) from None
    if "\x00" in text:
        raise InputFormatError(f"{path.name}: the header contains a NUL byte")
    try:
        names = [name.strip() for name in _parse_csv_line(text)]
    except csv.Error as exc:
        raise InputFormatError(f"{path.name}: the header is not valid CSV: {exc}") from None
    for i, name in enumerate(names, start=1):
        if not name:
            raise InputFormatError(f"{path.name}: header column {i} has no name")
    dupes = sorted({name for name in names if names.count(name) > 1})
    if dupes:
        raise InputFormatError(
            f"{path.name}: duplicate column name(s) in the header: {', '.join(dupes)}"
        )
    return names, rec.end


def _body_start(f: BinaryIO, csv_mode: bool) -> tuple[int, int] | None:
    """Byte offset and line number of the first data record; None for an empty CSV."""
    pos = _data_start(f)
    if not csv_mode:
        return pos, 1
    header = next(scan(f, pos, 1, csv_mode=True, keep=False), None)
    return None if header is None else (header.end, header.next_line)


def plan_chunks(path: Source, fmt: str, rows_per_chunk: int) -> list[ChunkSpan]:
    """Cut the file at record boundaries every ``rows_per_chunk`` records, in one pass.

    Blank lines are not records; they count for line numbers only. An empty or
    header-only file gives no chunks.
    """
    csv_mode = _check_format(fmt)
    if rows_per_chunk < 1:
        raise UsageError(f"rows per chunk must be at least 1, not {rows_per_chunk}")
    spans: list[ChunkSpan] = []
    with path.open("rb") as f:
        body = _body_start(f, csv_mode)
        if body is None:
            return spans
        count = start = first_line = end = 0
        for rec in scan(f, body[0], body[1], csv_mode=csv_mode, keep=False):
            if rec.blank:
                continue
            if count == 0:
                start, first_line = rec.start, rec.line
            count += 1
            end = rec.end
            if count == rows_per_chunk:
                spans.append(ChunkSpan(len(spans), start, end, first_line, count))
                count = 0
        if count:
            spans.append(ChunkSpan(len(spans), start, end, first_line, count))
    return spans


# --- reading records ---------------------------------------------------------------


def read_chunk(path: Source, fmt: str, span: ChunkSpan, header: list[str]) -> Iterator[Record]:
    """Yield the span's records in order, each with its values or an error."""
    csv_mode = _check_format(fmt)
    if csv_mode:
        fast = _fast_csv_chunk(path, span, header)
        if fast is not None:
            yield from fast
            return
    with path.open("rb") as f:
        for rec in scan(
            f, span.start, span.first_line, csv_mode=csv_mode, keep=True, stop=span.end
        ):
            if not rec.blank:
                yield _csv_record(rec, header) if csv_mode else _jsonl_record(rec)


def _fast_csv_chunk(path: Source, span: ChunkSpan, header: list[str]) -> list[Record] | None:
    """The common case of :func:`read_chunk` for CSV, in one pass; None when it does not apply.

    The chunk is read and decoded once and parsed by one ``csv.reader``. This
    gives exactly the records of the per-record path, provided the chunk is
    small enough that no record can be oversized, is valid UTF-8, has no NUL,
    and every record is well-formed (no csv.Error: an unterminated quote or
    text after a closing quote). Both end lines at LF, CRLF and a lone CR. Otherwise the caller
    takes the per-record path, which reports each bad record on its own.
    """
    size = span.end - span.start
    if size > MAX_RECORD_BYTES:
        return None
    with path.open("rb") as f:
        f.seek(span.start)
        data = f.read(size)
    if len(data) != size:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\x00" in text:
        return None
    # Physical lines, with their line ends, as csv.reader sees them (LF, CRLF
    # or lone CR), so reader.line_num indexes into ``lines``.
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    n_fields = len(header)
    keep = [i for i, name in enumerate(header) if name[:1] != "_"]
    names = [header[i] for i in keep]
    whole = len(keep) == n_fields
    pick = operator.itemgetter(*keep) if len(keep) > 1 and not whole else None
    first_line = span.first_line
    records: list[Record] = []
    append = records.append
    prev = 0
    try:
        for fields in reader:
            cur = reader.line_num
            start, prev = prev, cur
            if not fields:  # a blank line (only a line break) is not a record
                continue
            raw = lines[start] if cur - start == 1 else "".join(lines[start:cur])
            if raw[-1:] == "\n":  # the record's own line end is not part of its text
                raw = raw[:-2] if raw[-2:-1] == "\r" else raw[:-1]
            elif raw[-1:] == "\r":
                raw = raw[:-1]
            line = first_line + start
            if len(fields) != n_fields:
                error = f"expected {n_fields} fields, found {len(fields)}"
                append(Record(line, None, raw, error, None))
                continue
            if whole:
                values = dict(zip(names, fields, strict=True))
            elif pick is not None:
                values = dict(zip(names, pick(fields), strict=True))
            else:  # itemgetter of one index gives a value, of none is an error
                values = {name: fields[i] for i, name in zip(keep, names, strict=True)}
            append(Record(line, values, raw))
    except csv.Error:
        return None
    if len(records) != span.records:
        return None  # the scanner and the csv module disagree: trust the scanner
    return records


def _mib() -> int:
    return MAX_RECORD_BYTES // (1024 * 1024)


def _reject(rec: RawRecord, error: str, column: str | None = None) -> Record:
    return Record(rec.line, None, _raw_text(rec), error, column)


def _has_undecodable(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def _csv_record(rec: RawRecord, header: list[str]) -> Record:
    if not rec.terminated:
        return _reject(rec, "unterminated quoted field")
    if rec.size > MAX_RECORD_BYTES:
        return _reject(rec, f"record is larger than {_mib()} MiB")
    data = strip_newline(rec.data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        column = None
        try:  # find the column: undecodable bytes become lone surrogates
            fields = _parse_csv_line(data.decode("utf-8", errors="surrogateescape"))
            bad = [i for i, value in enumerate(fields) if _has_undecodable(value)]
            if bad and bad[0] < len(header):
                column = header[bad[0]]
        except csv.Error:
            pass
        where = f" (column {column})" if column else ""
        error = f"invalid UTF-8 at byte offset {exc.start} of the record{where}"
        return _reject(rec, error, column)
    try:
        fields = _parse_csv_line(text)
    except csv.Error as exc:
        return _reject(rec, str(exc))
    if len(fields) != len(header):
        return _reject(rec, f"expected {len(header)} fields, found {len(fields)}")
    values = {name: value for name, value in zip(header, fields, strict=True) if name[:1] != "_"}
    return _finish(rec, text, values)


def _finish(rec: RawRecord, raw: str, values: dict[str, str]) -> Record:
    for name, value in values.items():
        if "\x00" in value:
            return _reject(rec, f"NUL byte in column {name}", name)
    return Record(rec.line, values, raw)


class _Number(str):
    """A JSON number, as written in the file."""


class _NotJson:
    """A NaN, Infinity or -Infinity literal: json accepts them, JSON does not."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


# strict=False lets control characters (a raw NUL, a tab) into strings, so a NUL
# is reported by column rather than as a JSON syntax error. Numbers are kept as
# written (the columns are text: 1e999 is not "inf", 0.10 is not "0.1"), which
# also means no number is too large to parse.
_JSON = json.JSONDecoder(
    strict=False, parse_int=_Number, parse_float=_Number, parse_constant=_NotJson
)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(text: str) -> str | None:
    """Why ``text`` cannot be stored as UTF-8 (a lone surrogate from a \\ud800 escape), or None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"not valid Unicode (lone surrogate U+{ord(text[exc.start]):04X})"
    return None


def _jsonl_record(rec: RawRecord) -> Record:
    """One JSON Lines record; every value that cannot be stored is this record's reject."""
    if rec.size > MAX_RECORD_BYTES:
        return _reject(rec, f"record is larger than {_mib()} MiB")
    data = strip_newline(rec.data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _reject(rec, f"invalid UTF-8 at byte offset {exc.start} of the record")
    try:
        obj = _JSON.decode(text)
    except json.JSONDecodeError as exc:
        if "\x00" in text:
            return _reject(rec, "NUL byte in the record")
        return _reject(rec, f"malformed JSON: {exc}")
    except (ValueError, RecursionError) as exc:  # absurd nesting
        return _reject(rec, f"malformed JSON: {exc}")
    if not isinstance(obj, dict):
        return _reject(rec, f"expected a JSON object, got {_json_type(obj)}")
    values: dict[str, str] = {}
    for key, value in obj.items():
        if key[:1] == "_":
            continue
        bad = _lone_surrogate(key)
        if bad is not None:  # the name is shown escaped, so the reason is storable
            shown = _SURROGATE.sub("\ufffd", key)
            return _reject(rec, f"column {ascii(key)}: the column name is {bad}", shown)
        if value is None:
            continue
        if type(value) is str:
            bad = _lone_surrogate(value)
            if bad is not None:
                return _reject(rec, f"column {key}: {bad}", key)
            values[key] = value
        elif isinstance(value, _Number | bool):
            values[key] = str(value)
        elif isinstance(value, _NotJson):
            reason = f"column {key}: {value.literal} is not a JSON value (JSON has no NaN/Infinity)"
            return _reject(rec, reason, key)
        else:
            return _reject(rec, f"column {key}: expected a string, got {_json_type(value)}", key)
    return _finish(rec, text, values)


_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), "number")


# --- every record with its byte range (for the plan's key pass) ------------------------


def body_start(f: BinaryIO) -> int:
    """Where a JSON Lines file's content starts (past a byte order mark)."""
    return _data_start(f)


@dataclass(frozen=True)
class Located:
    start: int  # byte offset where the record starts
    end: int  # byte offset just past it
    record: Record


def scan_records(path: Path, fmt: str, header: list[str]) -> Iterator[Located]:
    """Every data record of the file in order, parsed, with its byte range.

    The same scanner as :func:`plan_chunks` and :func:`read_chunk`, so the
    byte ranges are the ones chunks read; blank lines are not records.
    """
    csv_mode = _check_format(fmt)
    with path.open("rb") as f:
        body = _body_start(f, csv_mode)
        if body is None:
            return
        for rec in scan(f, body[0], body[1], csv_mode=csv_mode, keep=True):
            if not rec.blank:
                parsed = _csv_record(rec, header) if csv_mode else _jsonl_record(rec)
                yield Located(rec.start, rec.end, parsed)
