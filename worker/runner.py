"""Chunked jobs, exactly once: plan, fan out, run each chunk in its own transaction.

Celery-agnostic: the tasks pass in how to enqueue a chunk. A chunk's
``job_chunks`` row is inserted first in the chunk's transaction (a duplicate
delivery waits on it, then sees it and does nothing) and commits together
with the chunk's data, its rejects and the job's counters. The chunk that
brings ``chunks_done`` to ``chunks_total`` finishes the job in that same
statement, so there is no chord and nothing to hang.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import text
from sqlmodel import Session

from worker import ledger
from worker.config import get_settings
from worker.db import session_scope
from worker.ledger import ChunkCounts, RejectedRow
from worker.models import Job, JobState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkResult:
    counts: ChunkCounts
    rejects: list[RejectedRow] = field(default_factory=list)
    batch_s: float | None = None


class Operation(Protocol):
    """A kind of bulk job, as plain functions over a session."""

    kind: str

    def plan(self, session: Session, job: Job) -> list[dict[str, Any]]:
        """Set the job up and return one JSON-able spec per chunk (stored on the job)."""
        ...

    def run_chunk(self, session: Session, job: Job, spec: dict[str, Any]) -> ChunkResult:
        """Do one chunk's work inside ``session``'s transaction."""
        ...


@dataclass(frozen=True)
class ChunkOutcome:
    job_id: int
    chunk_no: int
    ran: bool
    chunks_done: int
    chunks_total: int | None
    state: str


EnqueueFn = Callable[[int, int], None]

# Share of the soft time limit a single statement of a chunk may take.
STATEMENT_TIMEOUT_SHARE = 0.9


def start_job(job_id: int, operation: Operation, enqueue: EnqueueFn) -> int:
    """Claim the job, plan it once, enqueue every chunk not yet committed.

    Safe to call again for the same job (redelivery, recovery): the plan is
    stored on the first run and committed chunks are never enqueued again.
    Returns how many chunks were enqueued.
    """
    settings = get_settings()
    with session_scope() as session:
        job = ledger.claim(session, job_id, settings.bulkops_stuck_after_s)
        if job is None:
            logger.info(
                "job not claimable (running elsewhere or finished)", extra={"job_id": job_id}
            )
            return 0
        if job.chunks_total is None:
            specs = operation.plan(session, job)
            session.execute(
                text(
                    "UPDATE jobs SET params = params || jsonb_build_object('chunks', "
                    "CAST(:specs AS jsonb)) WHERE id = :id"
                ),
                {"id": job_id, "specs": ledger.to_json(specs)},
            )
            ledger.set_plan(session, job_id, len(specs))
            total = len(specs)
        else:
            total = job.chunks_total
        done = {
            int(r[0])
            for r in session.execute(
                text("SELECT chunk_no FROM job_chunks WHERE job_id = :id"), {"id": job_id}
            )
        }
        if len(done) >= total:
            ledger.finish_if_complete(session, job_id)
    missing = [n for n in range(total) if n not in done]
    for chunk_no in missing:
        enqueue(job_id, chunk_no)
    logger.info("job planned", extra={"job_id": job_id, "chunks": total, "enqueued": len(missing)})
    return len(missing)


def _start(job_id: int, chunk_no: int) -> int:
    """Count a start of the chunk, committed now; returns the unfinished starts so far."""
    with session_scope() as session:
        return int(
            session.execute(
                text(
                    "INSERT INTO job_chunk_starts (job_id, chunk_no, unfinished) "
                    "VALUES (:id, :n, 1) ON CONFLICT (job_id, chunk_no) DO UPDATE SET "
                    "unfinished = job_chunk_starts.unfinished + 1, started_at = now() "
                    "RETURNING unfinished"
                ),
                {"id": job_id, "n": chunk_no},
            ).scalar_one()
        )


def _end(job_id: int, chunk_no: int) -> None:
    """The chunk ended (committed, rolled back or raised): this start does not count."""
    with session_scope() as session:
        session.execute(
            text(
                "UPDATE job_chunk_starts SET unfinished = greatest(unfinished - 1, 0) "
                "WHERE job_id = :id AND chunk_no = :n"
            ),
            {"id": job_id, "n": chunk_no},
        )


def run_chunk(
    job_id: int, chunk_no: int, operation: Operation, worker: str | None = None
) -> ChunkOutcome:
    """Run one chunk exactly once; a duplicate or a chunk of a stopped job does nothing.

    Starts that never ended (the worker died in the chunk) are counted; a
    chunk that keeps killing its worker fails the job after
    ``BULKOPS_MAX_ATTEMPTS`` instead of being delivered forever.
    """
    max_attempts = get_settings().bulkops_max_attempts
    if _start(job_id, chunk_no) > max_attempts:
        ledger.fail(
            job_id,
            f"chunk {chunk_no} was started {max_attempts} times and its worker died each "
            "time (a poison chunk: killed, out of memory or past the hard time limit); "
            "giving up",
        )
        _end(job_id, chunk_no)
        return ChunkOutcome(job_id, chunk_no, False, 0, None, JobState.FAILED.value)
    try:
        return _run_chunk(job_id, chunk_no, operation, worker)
    finally:
        _end(job_id, chunk_no)


def _run_chunk(
    job_id: int, chunk_no: int, operation: Operation, worker: str | None
) -> ChunkOutcome:
    # A statement blocked in the driver cannot see Celery's soft time limit;
    # PostgreSQL cancels it a little before, and the chunk is retried.
    timeout_ms = int(get_settings().bulkops_task_soft_time_limit * 1000 * STATEMENT_TIMEOUT_SHARE)
    with session_scope() as session:
        session.execute(text(f"SET LOCAL statement_timeout = {timeout_ms}"))
        job = session.get(Job, job_id)
        if job is None or job.state != JobState.RUNNING:
            state = job.state if job else "missing"
            return ChunkOutcome(job_id, chunk_no, False, 0, None, state)
        claimed = session.execute(
            text(
                "INSERT INTO job_chunks (job_id, chunk_no, worker) VALUES (:id, :n, :w) "
                "ON CONFLICT DO NOTHING RETURNING chunk_no"
            ),
            {"id": job_id, "n": chunk_no, "w": worker},
        ).first()
        if claimed is None:
            logger.info("chunk already committed", extra={"job_id": job_id, "chunk": chunk_no})
            return ChunkOutcome(
                job_id, chunk_no, False, job.chunks_done, job.chunks_total, job.state
            )
        # The job may have been cancelled while we waited on a duplicate's lock.
        session.refresh(job)
        if job.state != JobState.RUNNING:
            session.rollback()
            return ChunkOutcome(
                job_id, chunk_no, False, job.chunks_done, job.chunks_total, job.state
            )
        spec = job.params.get("chunks", [])[chunk_no]
        started = time.perf_counter()
        result = operation.run_chunk(session, job, spec)
        elapsed = time.perf_counter() - started
        c = result.counts
        session.execute(
            text(
                "UPDATE job_chunks SET rows_read = :read, rows_inserted = :inserted, "
                "rows_updated = :updated, rows_skipped = :skipped, rows_rejected = :rejected, "
                "elapsed_s = :elapsed WHERE job_id = :id AND chunk_no = :n"
            ),
            {
                "id": job_id,
                "n": chunk_no,
                "elapsed": elapsed,
                "read": c.read,
                "inserted": c.inserted,
                "updated": c.updated,
                "skipped": c.skipped,
                "rejected": c.rejected,
            },
        )
        ledger.add_rejects(session, job_id, chunk_no, result.rejects)
        done, total, state = ledger.record_chunk(
            session, job_id, c, elapsed if result.batch_s is None else result.batch_s
        )
    logger.info(
        "chunk committed",
        extra={"job_id": job_id, "chunk": chunk_no, "rows": c.read, "elapsed_s": round(elapsed, 3)},
    )
    return ChunkOutcome(job_id, chunk_no, True, done, total, state)
