"""Streaming readers for import files: CSV with a header, and JSON Lines.

Files may be far larger than memory, so nothing here reads a whole file. A
single byte-level scanner finds record boundaries; :func:`plan_chunks` runs it
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from worker.errors import InputFormatError, UsageError

FORMATS = ("csv", "jsonl")

# A record larger than this is rejected without being held in memory whole.
MAX_RECORD_BYTES = 32 * 1024 * 1024
_PIECE_BYTES = 1024 * 1024  # readline() limit: bounds memory for huge lines
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


@dataclass(frozen=True)
class Record:
    line: int  # 1-based physical line where the record starts (CSV header is line 1)
    values: dict[str, str] | None  # column -> raw value; None when unparseable
    raw: str  # the record's original text, without its trailing newline
    error: str | None = None  # why it could not be parsed, when values is None
    column: str | None = None  # which column the error is about, if known


# --- the scanner -------------------------------------------------------------------

# CSV scanner states, as in the csv module's reader.
_START, _FIELD, _QUOTED, _QUOTE_IN_QUOTED = range(4)
_QUOTE = ord('"')
_COMMA = ord(",")


@dataclass(frozen=True)
class _RawRecord:
    start: int
    end: int
    line: int  # physical line where the record starts
    next_line: int  # physical line just after it
    data: bytes  # the record's bytes; only a prefix when size > MAX_RECORD_BYTES
    size: int
    terminated: bool  # False: end of file inside a quoted field
    blank: bool  # only whitespace (JSONL) or only a line break (CSV)


def _advance(buf: bytes, state: int) -> int:
    """Run the CSV state machine over ``buf`` (no newlines); return the new state.

    Only quote characters need a look; the commas that matter are the one just
    before a quote (does the quote open a field?) and the last byte.
    """
    i, n = 0, len(buf)
    while i < n:
        if state == _QUOTED:
            j = buf.find(b'"', i)
            if j < 0:
                return _QUOTED
            state, i = _QUOTE_IN_QUOTED, j + 1
        elif state == _QUOTE_IN_QUOTED:
            c = buf[i]
            state = _QUOTED if c == _QUOTE else _START if c == _COMMA else _FIELD
            i += 1
        elif state == _START and buf[i] == _QUOTE:
            state, i = _QUOTED, i + 1
        else:  # unquoted text: a quote here opens a field only right after a comma
            j = buf.find(b'"', i)
            if j < 0:
                return _START if buf[n - 1] == _COMMA else _FIELD
            state = _QUOTED if j > i and buf[j - 1] == _COMMA else _FIELD
            i = j + 1
    return state


def _scan(
    f: BinaryIO, pos: int, line: int, *, csv_mode: bool, keep: bool, stop: int | None = None
) -> Iterator[_RawRecord]:
    """Yield the raw records from byte ``pos`` (at physical ``line``) up to ``stop``/EOF."""
    f.seek(pos)
    while stop is None or pos < stop:
        start, first_line = pos, line
        parts: list[bytes] = []
        size, blank, state = 0, True, _START
        while True:
            piece = f.readline(_PIECE_BYTES)
            if not piece:
                break
            size += len(piece)
            pos += len(piece)
            if keep and size <= MAX_RECORD_BYTES:
                parts.append(piece)
            ended = piece.endswith(b"\n")
            content = piece[:-1] if ended else piece
            if ended:
                line += 1
            if csv_mode:
                blank = blank and not content.strip(b"\r")
                state = _advance(content, state)
            else:
                blank = blank and not content.strip()
            if ended and state != _QUOTED:
                break
        if size == 0:
            return
        yield _RawRecord(
            start, pos, first_line, line, b"".join(parts), size, state != _QUOTED, blank
        )


def _check_format(fmt: str) -> bool:
    """Return True for CSV, False for JSONL; anything else is a usage error."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return fmt == "csv"


def _data_start(f: BinaryIO) -> int:
    """Skip a UTF-8 byte order mark; return where the content starts."""
    f.seek(0)
    return len(_BOM) if f.read(len(_BOM)) == _BOM else 0


def _strip_newline(data: bytes) -> bytes:
    if data.endswith(b"\n"):
        data = data[:-1]
        if data.endswith(b"\r"):
            data = data[:-1]
    return data


def _raw_text(rec: _RawRecord) -> str:
    if rec.size > MAX_RECORD_BYTES:
        return rec.data[:_RAW_PREVIEW_BYTES].decode("utf-8", errors="replace") + "…"
    return _strip_newline(rec.data).decode("utf-8", errors="replace")


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


def read_header(path: Path, fmt: str) -> tuple[list[str], int]:
    """CSV: the header's column names and the byte offset just past it. JSONL: ([], 0).

    Raises InputFormatError for an empty file, an undecodable or malformed
    header, a column without a name, or duplicate column names.
    """
    if not _check_format(fmt):
        return [], 0
    with path.open("rb") as f:
        rec = next(_scan(f, _data_start(f), 1, csv_mode=True, keep=True), None)
    if rec is None:
        raise InputFormatError(f"{path.name} is empty")
    if rec.blank:
        raise InputFormatError(f"{path.name}: the header (line 1) is empty")
    if not rec.terminated:
        raise InputFormatError(f"{path.name}: the header has an unterminated quoted field")
    if rec.size > MAX_RECORD_BYTES:
        raise InputFormatError(f"{path.name}: the header is larger than {_mib()} MiB")
    try:
        text = _strip_newline(rec.data).decode("utf-8")
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
    header = next(_scan(f, pos, 1, csv_mode=True, keep=False), None)
    return None if header is None else (header.end, header.next_line)


def plan_chunks(path: Path, fmt: str, rows_per_chunk: int) -> list[ChunkSpan]:
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
        for rec in _scan(f, body[0], body[1], csv_mode=csv_mode, keep=False):
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


def read_chunk(path: Path, fmt: str, span: ChunkSpan, header: list[str]) -> Iterator[Record]:
    """Yield the span's records in order, each with its values or an error."""
    csv_mode = _check_format(fmt)
    if csv_mode:
        fast = _fast_csv_chunk(path, span, header)
        if fast is not None:
            yield from fast
            return
    with path.open("rb") as f:
        for rec in _scan(
            f, span.start, span.first_line, csv_mode=csv_mode, keep=True, stop=span.end
        ):
            if not rec.blank:
                yield _csv_record(rec, header) if csv_mode else _jsonl_record(rec)


def _fast_csv_chunk(path: Path, span: ChunkSpan, header: list[str]) -> list[Record] | None:
    """The common case of :func:`read_chunk` for CSV, in one pass; None when it does not apply.

    The chunk is read and decoded once and parsed by one ``csv.reader``. This
    gives exactly the records of the per-record path, provided the chunk is
    small enough that no record can be oversized, is valid UTF-8, has no NUL
    and no CR outside a CRLF (the csv module would end a record at a lone CR,
    the scanner does not), and every record is well-formed (no csv.Error: an
    unterminated quote or text after a closing quote). Otherwise the caller
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
    crs = text.count("\r")
    if crs and crs != text.count("\r\n"):
        return None
    # Physical lines: with no lone CR, io.StringIO(newline="") and split("\n")
    # agree on them, so reader.line_num indexes into ``lines``.
    lines = text.split("\n")
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
            if cur - start == 1:
                raw = lines[start]
            else:
                raw = "\n".join(lines[start:cur])
            if raw[-1:] == "\r":  # no lone CR, so this CR was part of a CRLF
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


def _reject(rec: _RawRecord, error: str, column: str | None = None) -> Record:
    return Record(rec.line, None, _raw_text(rec), error, column)


def _has_undecodable(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def _csv_record(rec: _RawRecord, header: list[str]) -> Record:
    if not rec.terminated:
        return _reject(rec, "unterminated quoted field")
    if rec.size > MAX_RECORD_BYTES:
        return _reject(rec, f"record is larger than {_mib()} MiB")
    data = _strip_newline(rec.data)
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


def _finish(rec: _RawRecord, raw: str, values: dict[str, str]) -> Record:
    for name, value in values.items():
        if "\x00" in value:
            return _reject(rec, f"NUL byte in column {name}", name)
    return Record(rec.line, values, raw)


def _jsonl_record(rec: _RawRecord) -> Record:
    if rec.size > MAX_RECORD_BYTES:
        return _reject(rec, f"record is larger than {_mib()} MiB")
    data = _strip_newline(rec.data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _reject(rec, f"invalid UTF-8 at byte offset {exc.start} of the record")
    try:
        # strict=False lets control characters (a raw NUL, a tab) into strings, so
        # a NUL is reported by column below rather than as a JSON syntax error.
        obj = json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        if "\x00" in text:
            return _reject(rec, "NUL byte in the record")
        return _reject(rec, f"malformed JSON: {exc}")
    except (ValueError, RecursionError) as exc:  # huge integers, absurd nesting
        return _reject(rec, f"malformed JSON: {exc}")
    if not isinstance(obj, dict):
        return _reject(rec, f"expected a JSON object, got {_json_type(obj)}")
    values: dict[str, str] = {}
    for key, value in obj.items():
        if key[:1] == "_" or value is None:
            continue
        if isinstance(value, str):
            values[key] = value
        elif isinstance(value, bool | int | float):
            values[key] = str(value)
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
        for rec in _scan(f, body[0], body[1], csv_mode=csv_mode, keep=True):
            if not rec.blank:
                parsed = _csv_record(rec, header) if csv_mode else _jsonl_record(rec)
                yield Located(rec.start, rec.end, parsed)
