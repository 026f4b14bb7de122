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
The key pass keeps only one batch in memory; the digests are counted by
PostgreSQL, so memory does not grow with the file.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import text
from sqlmodel import Session

from worker import parsing, validation
from worker.db import copy_rows
from worker.ledger import RejectedRow

_BATCH = 20_000  # key digests sent to PostgreSQL per COPY while planning
_PLAN_KEYS = "bulkops_plan_keys"  # temporary: every key of the file, dropped at commit
_KEY_COLUMNS = ("digest", "line", "chunk_no", "start", '"end"')


class _Row(Protocol):
    line: int
    raw: str


@dataclass(frozen=True)
class Decision:
    """What the duplicates rule does with a chunk's valid rows."""

    keep: list[Any]  # rows to load
    rejects: list[RejectedRow]  # later copies (insert, skip)
    superseded: int  # earlier copies a later line replaces (upsert): skipped


def digest(key: Sequence[str]) -> uuid.UUID:
    """128 bits of the key: a collision among 10^9 keys has odds below 10^-20."""
    data = "\x1f".join(key).encode("utf-8", "surrogatepass")
    return uuid.UUID(bytes=hashlib.md5(data, usedforsecurity=False).digest())


def plan(
    session: Session,
    job_id: int,
    path: Any,
    fmt: str,
    header: list[str],
    table: str,
    rows_per_chunk: int,
) -> list[parsing.ChunkSpan]:
    """Cut the file into chunks and record its repeated keys; one pass.

    Returns the chunks (as :func:`worker.parsing.plan_chunks` would).
    """
    session.execute(
        text(
            f"CREATE TEMP TABLE IF NOT EXISTS {_PLAN_KEYS} (digest uuid, line bigint, "
            'chunk_no int, start bigint, "end" bigint) ON COMMIT DROP'
        )
    )
    session.execute(text(f"TRUNCATE {_PLAN_KEYS}"))
    spans: list[parsing.ChunkSpan] = []
    batch: list[tuple[Any, ...]] = []
    count = start = first_line = end = 0
    for located in parsing.scan_records(path, fmt, header):
        rec = located.record
        if count == 0:
            start, first_line = located.start, rec.line
        count += 1
        end = located.end
        key = validation.raw_key(table, rec.values) if rec.values is not None else None
        if key is not None:
            batch.append((digest(key), rec.line, len(spans), located.start, located.end))
            if len(batch) >= _BATCH:
                copy_rows(session, _PLAN_KEYS, _KEY_COLUMNS, batch)
                batch.clear()
        if count == rows_per_chunk:
            spans.append(parsing.ChunkSpan(len(spans), start, end, first_line, count))
            count = 0
    if count:
        spans.append(parsing.ChunkSpan(len(spans), start, end, first_line, count))
    copy_rows(session, _PLAN_KEYS, _KEY_COLUMNS, batch)
    session.execute(
        text(
            f"""
            INSERT INTO job_key_dups (job_id, line, chunk_no, digest, start, "end")
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


def decide(
    session: Session,
    job_id: int,
    chunk_no: int,
    rows: Sequence[_Row],
    mode: str,
    key: Callable[[Any], tuple[str, ...]],
    reread: Callable[[list[tuple[int, int, int]]], dict[int, Any]],
) -> Decision:
    """Apply the sequential-pass rule to a chunk's valid ``rows``.

    ``reread([(line, start, end), ...])`` returns the valid row for each of
    those records of the file that is valid (other chunks' records).
    """
    occurrences: dict[int, list[tuple[int, int, int]]] = {}
    for line, other, start, end in session.execute(
        text(
            """
            SELECT d.line, o.line, o.start, o."end"
            FROM job_key_dups d JOIN job_key_dups o
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
        own = key(row)
        rivals = [
            o
            for o, _, _ in occurrences.get(row.line, ())
            if (o > row.line if upsert else o < row.line) and o in valid and key(valid[o]) == own
        ]
        if not rivals:
            keep.append(row)
        elif upsert:
            superseded += 1
        else:
            reason = f"duplicate of line {min(rivals)} in this file"
            rejects.append(RejectedRow(row.line, _key_column(row), reason, row.raw))
    return Decision(keep, rejects, superseded)


def _key_column(row: Any) -> str:
    return "title" if hasattr(row, "title") else "email"


def read_records(
    path: Any, fmt: str, header: list[str], spans: list[tuple[int, int, int]]
) -> Iterator[parsing.Record]:
    """The records at these (line, start, end) byte ranges of the file."""
    for line, start, end in spans:
        span = parsing.ChunkSpan(0, start, end, line, 1)
        yield from parsing.read_chunk(path, fmt, span, header)
