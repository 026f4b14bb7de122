"""The job ledger: job rows, their states, counters, heartbeat and summaries.

PostgreSQL holds the truth about every job. Every state change is one
atomic statement guarded by the state it expects, so two deliveries of the
same message can never run a job twice at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, select

from worker.db import session_scope
from worker.errors import BulkopsError, JobNotFound, UsageError
from worker.models import FINISHED_STATES, Job, JobReject, JobState


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
        if self.kind != "update_status":
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


# --- submit ------------------------------------------------------------------------

SendFn = Callable[[int, str], None]


def submit(kind: str, params: dict[str, Any], send: SendFn, key: str | None = None) -> int:
    """Write the job row, commit, then send its message; returns the job id.

    An idempotency key that already exists returns the existing job and sends
    nothing. If the message cannot be sent the row is removed again, so no job
    is left ``queued`` with no message behind it, and the error propagates.
    """
    task_id = str(uuid.uuid4())
    with session_scope() as session:
        row = session.execute(
            text(
                "INSERT INTO jobs (kind, state, params, idempotency_key, celery_task_id) "
                "VALUES (:kind, 'queued', CAST(:params AS jsonb), :key, :task_id) "
                "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
            ),
            {"kind": kind, "params": to_json(params), "key": key, "task_id": task_id},
        ).first()
        if row is None:
            existing = session.execute(
                text("SELECT id, kind FROM jobs WHERE idempotency_key = :key"), {"key": key}
            ).one()
            if existing.kind != kind:
                raise UsageError(
                    f"idempotency key {key!r} already belongs to job {existing.id} "
                    f"of kind {existing.kind}"
                )
            return int(existing.id)
        job_id = int(row.id)
    try:
        send(job_id, task_id)
    except BaseException:
        with session_scope() as session:
            session.execute(
                text("DELETE FROM jobs WHERE id = :id AND state = 'queued'"), {"id": job_id}
            )
        raise
    return job_id


def to_json(value: Any) -> str:
    import json

    return json.dumps(value, sort_keys=True, default=str)


# --- claim, progress, finish --------------------------------------------------------


def claim(session: Session, job_id: int, stale_after_s: float) -> Job | None:
    """Move a job to ``running``; None if another worker holds it or it is finished.

    A ``running`` job whose heartbeat is older than ``stale_after_s`` lost its
    worker and may be claimed again.
    """
    row = session.execute(
        text(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, "
            "started_at = coalesce(started_at, now()), heartbeat_at = now() "
            "WHERE id = :id AND (state = 'queued' OR (state = 'running' AND "
            "heartbeat_at < now() - make_interval(secs => :stale))) RETURNING id"
        ),
        {"id": job_id, "stale": stale_after_s},
    ).first()
    if row is None:
        return None
    return session.get(Job, job_id, populate_existing=True)


def set_plan(session: Session, job_id: int, chunks_total: int) -> None:
    session.execute(
        text("UPDATE jobs SET chunks_total = :n, heartbeat_at = now() WHERE id = :id"),
        {"id": job_id, "n": chunks_total},
    )


def record_chunk(
    session: Session, job_id: int, counts: ChunkCounts, batch_s: float | None = None
) -> tuple[int, int | None, str]:
    """Add a committed chunk's counters; the last chunk finishes the job.

    Runs inside the chunk's own transaction, after its data and its
    ``job_chunks`` row. A job past its error limits (``max_errors``,
    ``max_error_rate`` in its params) ends ``failed``, naming the limit; what
    committed stays. Returns (chunks_done, chunks_total, state).
    """
    row = session.execute(
        text(
            """
            UPDATE jobs SET
                rows_read = rows_read + :read,
                rows_inserted = rows_inserted + :inserted,
                rows_updated = rows_updated + :updated,
                rows_skipped = rows_skipped + :skipped,
                rows_rejected = rows_rejected + :rejected,
                chunks_done = chunks_done + 1,
                heartbeat_at = clock_timestamp(),
                longest_batch_s = CASE WHEN CAST(:batch_s AS float8) IS NULL THEN longest_batch_s
                    ELSE greatest(coalesce(longest_batch_s, 0), :batch_s) END,
                state = CASE
                    WHEN state = 'running' AND chunks_done + 1 >= chunks_total THEN
                        CASE WHEN rows_rejected + :rejected > 0 THEN 'partially_succeeded'
                             ELSE 'succeeded' END
                    ELSE state END,
                finished_at = CASE
                    WHEN state = 'running' AND chunks_done + 1 >= chunks_total
                    THEN clock_timestamp()
                    ELSE finished_at END
            WHERE id = :id
            RETURNING chunks_done, chunks_total, state, rows_read, rows_rejected,
                      params->'max_errors' AS max_errors, params->'max_error_rate' AS max_rate
            """
        ),
        {"id": job_id, "batch_s": batch_s, **asdict(counts)},
    ).one()
    state = str(row.state)
    limit = error_limit_passed(row.rows_read, row.rows_rejected, row.max_errors, row.max_rate)
    if limit and state in ("running", "succeeded", "partially_succeeded"):
        session.execute(
            text(
                "UPDATE jobs SET state = 'failed', error = :error, "
                "finished_at = coalesce(finished_at, now()) WHERE id = :id"
            ),
            {"id": job_id, "error": limit},
        )
        state = "failed"
    return int(row.chunks_done), row.chunks_total, state


def error_limit_passed(
    read: int, rejected: int, max_errors: int | None, max_rate: float | None
) -> str | None:
    """The error naming the limit a job has passed, or None."""
    if max_errors is not None and rejected > max_errors:
        return f"stopped: {rejected} rows rejected, more than --max-errors {max_errors}"
    if max_rate is not None and read and rejected / read > max_rate:
        return (
            f"stopped: {rejected} of {read} rows rejected ({rejected / read:.2%}), "
            f"more than --max-error-rate {max_rate}"
        )
    return None


def add_counts(session: Session, job_id: int, counts: ChunkCounts) -> None:
    """Add counters for work done outside a chunk (e.g. seeding's users, in the plan)."""
    session.execute(
        text(
            "UPDATE jobs SET rows_read = rows_read + :read, "
            "rows_inserted = rows_inserted + :inserted, rows_updated = rows_updated + :updated, "
            "rows_skipped = rows_skipped + :skipped, rows_rejected = rows_rejected + :rejected "
            "WHERE id = :id"
        ),
        {"id": job_id, **asdict(counts)},
    )


def finish_if_complete(session: Session, job_id: int) -> str:
    """Finish a running job whose chunks are all done (e.g. a job with zero chunks)."""
    row = session.execute(
        text(
            "UPDATE jobs SET finished_at = clock_timestamp(), state = CASE WHEN rows_rejected > 0 "
            "THEN 'partially_succeeded' ELSE 'succeeded' END "
            "WHERE id = :id AND state = 'running' AND chunks_done >= chunks_total "
            "RETURNING state"
        ),
        {"id": job_id},
    ).first()
    return str(row.state) if row else ""


def heartbeat(session: Session, job_id: int) -> None:
    session.execute(text("UPDATE jobs SET heartbeat_at = now() WHERE id = :id"), {"id": job_id})


def fail(job_id: int, error: BaseException | str) -> None:
    """Mark a job failed with its error, in its own transaction."""
    message = error.message if isinstance(error, BulkopsError) else str(error)
    with session_scope() as session:
        session.execute(
            text(
                "UPDATE jobs SET state = 'failed', error = :error, finished_at = now() "
                "WHERE id = :id AND state IN ('queued', 'running')"
            ),
            {"id": job_id, "error": pg_text(message[:4000]) or type(error).__name__},
        )


def cancel(job_id: int) -> str:
    """Ask a job to stop after its current chunk; returns its state afterwards."""
    with session_scope() as session:
        row = session.execute(
            text(
                """
                UPDATE jobs SET cancel_requested = true,
                    state = CASE WHEN state IN ('queued', 'running') THEN 'cancelled'
                                 ELSE state END,
                    finished_at = CASE WHEN state IN ('queued', 'running') THEN clock_timestamp()
                                       ELSE finished_at END
                WHERE id = :id RETURNING state
                """
            ),
            {"id": job_id},
        ).first()
        if row is None:
            raise JobNotFound(f"no job with id {job_id}")
        return str(row.state)


REJECT_COLUMN_MAX = 200  # job_rejects.column is varchar(200)


def pg_text(value: str) -> str:
    """PostgreSQL text cannot hold NUL: show it as U+FFFD, as undecodable bytes are."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def storable(r: RejectedRow) -> RejectedRow:
    """The reject as ``job_rejects`` can hold it, whatever the input contained.

    A rejected row's text may contain NUL bytes (that is often why it was
    rejected) and a JSON key used as the column name may be any length.
    """
    column = None if r.column is None else pg_text(r.column)[:REJECT_COLUMN_MAX]
    raw = None if r.raw is None else pg_text(r.raw)
    return RejectedRow(r.line, column, pg_text(r.reason), raw)


def add_rejects(
    session: Session, job_id: int, chunk_no: int, rejects: Sequence[RejectedRow]
) -> None:
    if not rejects:
        return
    session.execute(
        text(
            'INSERT INTO job_rejects (job_id, chunk_no, line, "column", reason, raw) '
            "VALUES (:job_id, :chunk_no, :line, :column, :reason, :raw)"
        ),
        [
            {
                "job_id": job_id,
                "chunk_no": chunk_no,
                "line": r.line,
                "column": r.column,
                "reason": r.reason,
                "raw": r.raw,
            }
            for r in map(storable, rejects)
        ],
    )


# --- reading -------------------------------------------------------------------------


def get_summary(job_id: int) -> JobSummary:
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            raise JobNotFound(f"no job with id {job_id}")
        return summarize(job)


def list_jobs(limit: int = 20, state: str | None = None) -> list[JobSummary]:
    with session_scope() as session:
        query = select(Job).order_by(Job.id.desc()).limit(limit)  # type: ignore[union-attr]
        if state:
            if state not in {s.value for s in JobState}:
                raise UsageError(f"unknown job state {state!r}")
            query = query.where(Job.state == state)
        return [summarize(job) for job in session.exec(query).all()]


def celery_task_id(job_id: int) -> str | None:
    with session_scope() as session:
        return session.execute(
            text("SELECT celery_task_id FROM jobs WHERE id = :id"), {"id": job_id}
        ).scalar()


def get_rejects(job_id: int, limit: int | None = None) -> list[RejectedRow]:
    with session_scope() as session:
        if session.get(Job, job_id) is None:
            raise JobNotFound(f"no job with id {job_id}")
        query = (
            select(JobReject)
            .where(JobReject.job_id == job_id)
            .order_by(JobReject.line, JobReject.id)  # type: ignore[arg-type]
        )
        if limit is not None:
            query = query.limit(limit)
        return [
            RejectedRow(line=r.line, column=r.column, reason=r.reason, raw=r.raw)
            for r in session.exec(query).all()
        ]
