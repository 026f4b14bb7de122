"""Value objects of the job ledger: counts, rejected rows, job summaries (no SQL here).

``pg_text`` / ``storable`` make any text storable: PostgreSQL text holds
neither NUL nor lone surrogates.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from worker.models import FINISHED_STATES, Job, JobKind


@dataclass(frozen=True)
class ChunkCounts:
    """What one chunk did with its input rows."""

    read: int = 0
    inserted: int = 0
    updated: int = 0
    skipped: int = 0
    rejected: int = 0


@dataclass(frozen=True)
class RejectedRow:
    line: int | None
    column: str | None
    reason: str
    raw: str | None


@dataclass(frozen=True)
class JobSummary:
    id: int
    kind: str
    state: str
    rows_read: int
    rows_inserted: int
    rows_updated: int
    rows_skipped: int
    rows_rejected: int
    chunks_done: int
    chunks_total: int | None
    elapsed_s: float | None
    error: str | None
    params: dict[str, Any]
    created_at: str | None
    finished_at: str | None
    longest_batch_s: float | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.kind != JobKind.UPDATE_STATUS:
            data.pop("longest_batch_s")
        return data


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def summarize(job: Job) -> JobSummary:
    assert job.id is not None
    elapsed = None
    if job.started_at is not None:
        end = job.finished_at or job.heartbeat_at or job.started_at
        elapsed = round((end - job.started_at).total_seconds(), 3)
    return JobSummary(
        id=job.id,
        kind=job.kind,
        state=job.state,
        rows_read=job.rows_read,
        rows_inserted=job.rows_inserted,
        rows_updated=job.rows_updated,
        rows_skipped=job.rows_skipped,
        rows_rejected=job.rows_rejected,
        chunks_done=job.chunks_done,
        chunks_total=job.chunks_total,
        elapsed_s=elapsed,
        error=job.error,
        params=job.params,
        created_at=_iso(job.created_at),
        finished_at=_iso(job.finished_at),
        longest_batch_s=job.longest_batch_s,
    )


REJECT_COLUMN_MAX = 200  # job_rejects.column is varchar(200)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def pg_text(value: str) -> str:
    """Text PostgreSQL can store: NUL and lone surrogates (U+D800..U+DFFF, from a JSON
    ``"\\ud800"``) become U+FFFD, as undecodable bytes are."""
    return _UNSTORABLE.sub("\ufffd", value)


def storable(r: RejectedRow) -> RejectedRow:
    """The reject as ``job_rejects`` can hold it, whatever the input contained.

    A rejected row's text may contain NUL bytes or lone surrogates (that is
    often why it was rejected) and a JSON key used as the column name may be
    any length.
    """
    column = None if r.column is None else pg_text(r.column)[:REJECT_COLUMN_MAX]
    raw = None if r.raw is None else pg_text(r.raw)
    return RejectedRow(r.line, column, pg_text(r.reason), raw)
