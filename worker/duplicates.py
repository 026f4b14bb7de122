"""Duplicates across a whole import file, decided as one sequential pass would.

Chunks run in any order on any worker, yet the result must be that of one
pass over the file: in insert and skip modes the first valid line with a key
loads and every later one is a reject (``duplicate of line N``); in upsert the
last valid line wins and the earlier ones are skipped. And two chunks of one
job must never write the same key, or they wait on each other (deadlocks).

So the plan reads the file once and writes every occurrence of a key that
appears more than once (a 128-bit digest of the key, the line and the
record's byte range) to ``job_key_dups``, in the plan's transaction. A chunk
reads the occurrences of its own rows, re-reads and validates the few other
records involved (a line that is invalid is nobody's original), and decides.
The key pass keeps one block of the file in memory and streams the keys to
PostgreSQL in one COPY as it reads (the server stores them meanwhile, on the
other core); the digests are counted there, so memory does not grow with the file.

Plan while loading: in insert and skip modes a line's fate depends only on the
lines before it, so the first few chunks need not wait for the whole file.
While it reads them the key pass also keeps their keys in memory, and hands
each one over (``early``) as soon as it is read, with the repeated keys among
it and the chunks before it: they are committed and the chunk runs while the
plan reads on (its later repeats are the later chunks' concern).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from sqlalchemy import text
from sqlmodel import Session

from worker import parsing
from worker.db import copy_stream, savepoint, session_scope
from worker.ledger import RejectedRow
from worker.models import FINISHED_STATES

_PLAN_KEYS = "bulkops_plan_keys"  # temporary: every key of the file, dropped at commit
_BLOCK_BYTES = 1 << 20  # the key pass parses the file in blocks this large
_BLANK: Any = object()  # the "key" of a blank line of a block: no record there
_SCANNED_BLOCK = 10_000  # records per block from the scanner and JSON readings
_KEY_COLUMNS = ("digest", "line", "chunk_no", "start", '"end"')
# Chunks handed over while the plan reads on: their keys stay in memory until then.
# Six keep the other worker process busy until a 1M-row plan ends (~6 s; four left
# it idle 1.7 s), for 29 MB of keys at most.
EARLY_CHUNKS = 6


class _Row(Protocol):
    @property
    def line(self) -> int: ...

    @property
    def raw(self) -> str: ...


@dataclass(frozen=True)
class Decision:
    """What the duplicates rule does with a chunk's valid rows."""

    keep: list[Any]  # rows to load
    rejects: list[RejectedRow]  # later copies (insert, skip)
    superseded: int  # earlier copies a later line replaces (upsert): skipped


# (digest, line, chunk_no, start, end) for one record with a key. The digest is
# ``hash(key)`` (a tuple): 64 bits, fast, not stable across processes. A match is only a
# candidate: chunks compare the real keys, so a collision costs a re-read, never a wrong
# reject. A plan redone after a crash starts from nothing, so digests are never compared
# across processes.
KeyRow = tuple[int, int, int, int, int]
# a chunk the plan hands over before it ends, and the repeated keys it needs
EarlyFn = Callable[[parsing.ChunkSpan, list[KeyRow]], None]


@dataclass(frozen=True)
class FileKey:
    """How a file's records give their natural key before validation."""

    columns: tuple[str, ...]  # the file columns it is made of
    # their raw values, in order -> the key a valid row would have (None: no valid key)
    make: Callable[[Sequence[Any]], tuple[Any, ...] | None]

    def of(self, values: dict[str, str]) -> tuple[Any, ...] | None:
        return self.make([values.get(name) for name in self.columns])


def plan(
    session: Session,
    job_id: int,
    path: Any,
    fmt: str,
    header: list[str],
    key: FileKey,
    rows_per_chunk: int,
    early: EarlyFn | None = None,
) -> list[parsing.ChunkSpan]:
    """Cut the file into chunks and record its repeated keys, in one pass.

    Returns the chunks, as :func:`worker.parsing.plan_chunks` cuts them. With
    ``early`` (insert and skip modes only), each of the first
    :data:`EARLY_CHUNKS` chunks is handed to it once read, with every
    occurrence of a key repeated within it and the chunks before it (for
    :func:`add_early`); a pass that starts over hands over none twice.
    """
    session.execute(
        text(
            f"CREATE TEMP TABLE IF NOT EXISTS {_PLAN_KEYS} (digest bigint, line bigint, "
            'chunk_no int, start bigint, "end" bigint) ON COMMIT DROP'
        )
    )
    spans: list[parsing.ChunkSpan] = []
    handed: list[parsing.ChunkSpan] = []

    def hand_over(span: parsing.ChunkSpan, repeated: list[KeyRow]) -> None:
        if span.chunk_no < len(handed):  # the scanner's pass, after the fast one gave up
            assert handed[span.chunk_no] == span, "the two readings cut the file apart"
            return
        handed.append(span)
        assert early is not None
        early(span, repeated)

    for records in (_fast_records, _scanned_records):
        session.execute(text(f"TRUNCATE {_PLAN_KEYS}"))
        spans.clear()
        keys = _key_pass(
            records(path, fmt, header, key),
            rows_per_chunk,
            spans,
            hand_over if early is not None else None,
        )
        try:  # one COPY, fed as the file is read: the server stores keys meanwhile
            with savepoint(session):
                copy_stream(session, _PLAN_KEYS, _KEY_COLUMNS, keys)
            break
        except _Unusual:
            continue  # the file needs the scanner's record-by-record reading
    session.execute(
        text(
            f"""
            INSERT INTO bulkops_ledger.job_key_dups (job_id, line, chunk_no, digest, start, "end")
            SELECT :job_id, k.line, k.chunk_no, k.digest, k.start, k."end"
            FROM {_PLAN_KEYS} k
            WHERE k.digest IN (SELECT digest FROM {_PLAN_KEYS} GROUP BY digest HAVING count(*) > 1)
            ON CONFLICT DO NOTHING
            """
        ),
        {"job_id": job_id},
    )
    session.execute(text(f"TRUNCATE {_PLAN_KEYS}"))
    return spans


class _Unusual(Exception):
    """The fast reading of a file met something only the scanner reads right."""


# blocks of (line, start, end, key or None), one for each data record, in file order
_Keyed = Iterator[list[tuple[int, int, int, tuple[str, ...] | None]]]


def _key_pass(
    records: _Keyed,
    rows_per_chunk: int,
    spans: list[parsing.ChunkSpan],
    early: EarlyFn | None,
) -> Iterator[str]:
    """Cut ``records`` into chunks (appended to ``spans``) and yield their keys as COPY
    text for ``_PLAN_KEYS``; with ``early``, hand the first chunks over as they are cut.

    Whole segments of a block at a time, in comprehensions: the per-record loop
    it replaces cost as much as parsing the file (1.3 of 2.3 s for 1M rows).
    """
    line_format = "\t".join(["%d"] * len(_KEY_COLUMNS)) + "\n"
    count = start = first_line = end = 0
    # while chunks are handed over early: each key's first occurrence, and every
    # occurrence of the keys seen more than once (a list for each key would cost
    # a third more memory)
    first: dict[int, KeyRow] | None = {} if early is not None else None
    repeated: dict[int, list[KeyRow]] = {}
    for block in records:
        done = 0
        while done < len(block):
            segment = block[done : done + rows_per_chunk - count]
            done += len(segment)
            if count == 0:
                first_line, start = segment[0][0], segment[0][1]
            count += len(segment)
            end = segment[-1][2]
            chunk_no = len(spans)
            if first is None:  # straight to COPY text: no tuple per record
                yield "".join(
                    [
                        line_format % (hash(k), ln, chunk_no, s, e)
                        for ln, s, e, k in segment
                        if k is not None
                    ]
                )
            else:
                rows = [(hash(k), ln, chunk_no, s, e) for ln, s, e, k in segment if k is not None]
                for row in rows:
                    if (earlier := first.setdefault(row[0], row)) is not row:
                        repeated.setdefault(row[0], [earlier]).append(row)
                yield "".join(map(line_format.__mod__, rows))
            if count == rows_per_chunk:
                spans.append(parsing.ChunkSpan(chunk_no, start, end, first_line, count))
                count = 0
                if first is not None and early is not None:
                    early(spans[-1], [r for rows in repeated.values() for r in rows])
                    if len(spans) == EARLY_CHUNKS:
                        first, repeated = None, {}  # the rest waits for the whole plan
    if count:
        spans.append(parsing.ChunkSpan(len(spans), start, end, first_line, count))


def add_early(session: Session, job_id: int, repeated: Sequence[KeyRow]) -> None:
    """Record repeated keys of chunks handed over before the plan commits (its own
    transaction: the plan later records them again, with the file's other repeats)."""
    if not repeated:
        return
    digests, lines, chunk_nos, starts, ends = (list(c) for c in zip(*repeated, strict=True))
    session.execute(
        text(
            """
            INSERT INTO bulkops_ledger.job_key_dups (job_id, line, chunk_no, digest, start, "end")
            SELECT :job_id, * FROM unnest(CAST(:lines AS bigint[]), CAST(:chunk_nos AS int[]),
                CAST(:digests AS bigint[]), CAST(:starts AS bigint[]), CAST(:ends AS bigint[]))
            ON CONFLICT DO NOTHING
            """
        ),
        {
            "job_id": job_id,
            "lines": lines,
            "chunk_nos": chunk_nos,
            "digests": digests,
            "starts": starts,
            "ends": ends,
        },
    )


def _scanned_records(path: Any, fmt: str, header: list[str], key: FileKey) -> _Keyed:
    """Every record as the chunks' scanner reads it (any file, slower)."""
    located = parsing.scan_records(path, fmt, header)
    while block := list(itertools.islice(located, _SCANNED_BLOCK)):
        yield [
            (r.record.line, r.start, r.end, None if values is None else key.of(values))
            for r in block
            for values in (r.record.values,)
        ]


def _fast_records(path: Any, fmt: str, header: list[str], key: FileKey) -> _Keyed:
    """The common file, parsed in large blocks by the csv module (or json), in C.

    Only the keys matter here, so a bad record needs no care: it has a wrong
    key or none, and its chunk rejects it. Record boundaries must match the
    scanner's, so where the csv module could cut records otherwise (a lone CR,
    text after a closing quote) this raises :class:`_Unusual`.
    """
    names = key.columns
    with path.open("rb") as f:
        if fmt != "csv":
            yield from _jsonl_records(f, key)
            return
        _, pos = parsing.read_header(path, fmt)
        f.seek(0)
        line = f.read(pos).count(b"\n") + 1  # the physical line the data starts on
        index = {name: i for i, name in enumerate(header)}
        picks = [index[n] for n in names if n in index]
        if len(picks) != len(names):
            return  # no key column: check_header refuses such a file anyway
        width = len(header)
        pick = operator.itemgetter(*picks) if len(picks) > 1 else lambda f: (f[picks[0]],)
        make_key = key.make
        carry = b""
        while True:
            block = f.read(_BLOCK_BYTES)
            data = carry + block
            if not data:
                return
            if block:
                cut = data.rfind(b"\n") + 1
                data, carry = data[:cut], data[cut:]
                if not data:
                    continue  # no line break yet: read on
            else:
                carry = b""
            text_block = data.decode("utf-8", "surrogateescape")
            crs = text_block.count("\r")
            if crs and crs != text_block.count("\r\n"):
                raise _Unusual("a lone CR")
            lens = list(itertools.accumulate(map(len, data.split(b"\n"))))
            # offset in the block of the record starting at line k of it
            offset = [0, *(n + k for k, n in enumerate(lens, 1))]
            lines = len(lens) - data.endswith(b"\n")  # physical lines in the block
            try:  # each record's key as it is parsed: no list of fields outlives its line
                keys: list[Any] | None = [
                    make_key(pick(f)) if len(f) == width else None if f else _BLANK
                    for f in csv.reader(io.StringIO(text_block, newline=""), strict=True)
                ]
            except csv.Error:
                keys = None  # a record that goes on in the next block, or worse: read slowly
            if keys is not None and len(keys) == lines:  # one line per record: all at once
                prev = lines
                ends = [pos + o for o in offset[1 : lines + 1]]
                starts = [pos, *ends[:-1]]
                records = list(zip(range(line, line + lines), starts, ends, keys, strict=True))
                if _BLANK in keys:
                    records = [r for r in records if r[3] is not _BLANK]
            else:
                records, prev = [], 0
                reader = csv.reader(io.StringIO(text_block, newline=""), strict=True)
                try:
                    for row in reader:
                        here = reader.line_num
                        if row:
                            found = make_key(pick(row)) if len(row) == width else None
                            at = (line + prev, pos + offset[prev], pos + offset[here])
                            records.append((*at, found))
                        prev = here
                except csv.Error as exc:
                    if not block or "unexpected end of data" not in str(exc):
                        raise _Unusual(str(exc)) from None
                    carry = data[offset[prev] :] + carry  # a record goes on in the next block
            yield records
            pos += offset[prev]
            line += prev


def _jsonl_records(f: BinaryIO, key: FileKey) -> _Keyed:
    pos = parsing.body_start(f)
    f.seek(pos)
    line = 0
    while raws := list(itertools.islice(f, _SCANNED_BLOCK)):
        block = []
        for raw in raws:
            line += 1
            end = pos + len(raw)
            if raw.strip():
                found = _json_key(raw.decode("utf-8", "surrogateescape"), key)
                block.append((line, pos, end, found))
            pos = end
        yield block


def _json_key(text_line: str, key: FileKey) -> tuple[Any, ...] | None:
    try:  # as worker.parsing reads a JSON record
        obj = json.loads(text_line, strict=False)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    values = {}
    for name in key.columns:
        value = obj.get(name)
        if isinstance(value, str):
            values[name] = value
        elif isinstance(value, bool | int | float):
            values[name] = str(value)
    return key.of(values)


def decide(
    session: Session,
    job_id: int,
    chunk_no: int,
    rows: Sequence[_Row],
    mode: str,
    key: Callable[[Any], Any],
    reread: Callable[[list[tuple[int, int, int]]], dict[int, Any]],
    key_column: str,
) -> Decision:
    """Apply the sequential-pass rule to a chunk's valid ``rows``.

    ``key(row)`` is a row's natural key; a later copy's reject points at
    ``key_column``.
    ``reread([(line, start, end), ...])`` returns the valid row for each of
    those records of the file that is valid (other chunks' records).
    """
    occurrences: dict[int, list[tuple[int, int, int]]] = {}
    for line, other, start, end in session.execute(
        text(
            """
            SELECT d.line, o.line, o.start, o."end"
            FROM bulkops_ledger.job_key_dups d JOIN bulkops_ledger.job_key_dups o
              ON o.job_id = d.job_id AND o.digest = d.digest AND o.line <> d.line
            WHERE d.job_id = :job_id AND d.chunk_no = :chunk_no
            ORDER BY d.line, o.line
            """
        ),
        {"job_id": job_id, "chunk_no": chunk_no},
    ):
        occurrences.setdefault(int(line), []).append((int(other), int(start), int(end)))
    if not occurrences:
        return Decision(list(rows), [], 0)
    mine = {r.line: r for r in rows}
    upsert = mode == "upsert"
    wanted = {
        o
        for line, others in occurrences.items()
        if line in mine
        for o in others
        if o[0] not in mine and (o[0] > line if upsert else o[0] < line)
    }
    valid = {**reread(sorted(wanted)), **mine}
    keep: list[Any] = []
    rejects: list[RejectedRow] = []
    superseded = 0
    for row in rows:
        others = occurrences.get(row.line)
        if not others:
            keep.append(row)
            continue
        own = key(row)
        rivals = [
            o
            for o, _, _ in others
            if (o > row.line if upsert else o < row.line) and o in valid and key(valid[o]) == own
        ]
        if not rivals:
            keep.append(row)
        elif upsert:
            superseded += 1
        else:
            reason = f"duplicate of line {min(rivals)} in this file"
            rejects.append(RejectedRow(row.line, key_column, reason, row.raw))
    return Decision(keep, rejects, superseded)


def read_records(
    path: Any, fmt: str, header: list[str], spans: list[tuple[int, int, int]]
) -> Iterator[parsing.Record]:
    """The records at these (line, start, end) byte ranges of the file (opened once)."""
    with path.open("rb") as f:
        for line, start, end in spans:
            span = parsing.ChunkSpan(0, start, end, line, 1)
            source: Any = _Opened(f)  # parsing reads any object with open()
            yield from parsing.read_chunk(source, fmt, span, header)


class _Opened:
    """An open file as a :mod:`worker.parsing` source: each open reads the same descriptor."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f

    @contextlib.contextmanager
    def open(self, mode: str = "rb") -> Iterator[BinaryIO]:
        yield self._f


def prune_finished() -> int:
    """Delete the repeated keys of every finished job (only running chunks read them).

    Returns the rows deleted. A finished job never runs again.
    """
    with session_scope() as session:
        result = session.execute(
            text(
                "DELETE FROM bulkops_ledger.job_key_dups d USING bulkops_ledger.jobs j "
                "WHERE d.job_id = j.id "
                "AND j.state = ANY(CAST(:finished AS text[]))"
            ),
            {"finished": sorted(FINISHED_STATES)},
        )
    return int(getattr(result, "rowcount", 0) or 0)
