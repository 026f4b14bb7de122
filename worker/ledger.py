"""The job ledger: job rows, their states, counters, rejects and summaries.

PostgreSQL holds the truth about every job. Every state change is one
atomic statement guarded by the state it expects, so two deliveries of the
same message can never run a job twice at once. This module and
:mod:`worker.chunks` (chunks, liveness, stuck and dead) own every statement
on the ledger tables.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, text
from sqlmodel import Session, select

from worker import chunks
from worker.chunks import STATES, poison_plan
from worker.db import copy_rows, get_engine, session_scope, translated
from worker.errors import BulkopsError, JobNotFound, UsageError
from worker.models import FINISHED_STATES, Job, JobReject, JobState
from worker.params import current_shape
from worker.summary import ChunkCounts, JobSummary, RejectedRow, pg_text, storable, summarize

__all__ = ["ChunkCounts", "JobSummary", "RejectedRow", "pg_text", "storable"]


# --- submit ------------------------------------------------------------------------

SendFn = Callable[[int, str], None]

# Keys the runner adds to a job's params; the rest is what was submitted.
EARLY_SPECS = "early_chunks"  # the chunks a plan handed over before it ended
PLAN_KEYS = frozenset({"chunks", EARLY_SPECS, "dry_run_breakdown"})


def _comparable(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """What makes two submits with one key the same request.

    The plan's own keys are not part of it, an uploaded file counts by its
    content (size, SHA-256), not by where this upload of it was stored, and
    params an earlier release stored are read in today's shape.
    """
    out = {k: v for k, v in current_shape(kind, params).items() if k not in PLAN_KEYS}
    upload = out.get("upload")
    if isinstance(upload, dict):
        out["upload"] = {k: upload.get(k) for k in ("size", "sha256")}
    return out


def submit(kind: str, params: dict[str, Any], send: SendFn, key: str | None = None) -> int:
    """Write the job row, commit, then send its message; returns the job id.

    An idempotency key that already exists returns the existing job and sends
    nothing; the same key with another kind or other parameters is a
    UsageError naming that job. If the message cannot be sent the row is
    removed again, so no job is left ``queued`` with no message behind it, and
    the error propagates. While one submit of a key sends, a second submit of
    that key waits for its outcome (a lock on the key), so it never returns
    the id of a row that is then removed. (:mod:`worker.aclient` runs the same
    steps, below, on an async engine.)
    """
    if key is None:
        return _submit(kind, params, send, None)
    with translated():
        conn = get_engine().connect()
    try:
        with translated():
            lock_key(conn, key)
        return _submit(kind, params, send, key)
    finally:
        try:
            unlock_key(conn, key)
        except Exception:
            conn.invalidate()  # never leave the key locked on a pooled connection
        conn.close()


def lock_key(conn: Connection, key: str) -> None:
    """Take the key's submit lock (session-level, on ``conn``), committed: see :func:`submit`."""
    conn.execute(text("SELECT pg_advisory_lock(hashtextextended(:k, 0))"), {"k": key})
    conn.commit()


def unlock_key(conn: Connection, key: str) -> None:
    conn.rollback()
    conn.execute(text("SELECT pg_advisory_unlock(hashtextextended(:k, 0))"), {"k": key})
    conn.commit()


def new_task_id() -> str:
    return str(uuid.uuid4())


def _submit(kind: str, params: dict[str, Any], send: SendFn, key: str | None) -> int:
    task_id = new_task_id()
    with session_scope() as session:
        job_id, created = insert_job(session, kind, params, key, task_id)
    if not created:
        return job_id
    try:
        send(job_id, task_id)
    except BaseException:
        with session_scope() as session:
            remove_unsent(session, job_id)
        raise
    return job_id


def insert_job(
    session: Session, kind: str, params: dict[str, Any], key: str | None, task_id: str
) -> tuple[int, bool]:
    """The queued job row, in the caller's transaction: (id, True), or the key's job (id, False).

    The key's job must be the same request (kind, parameters), else UsageError.
    """
    wanted = json.loads(to_json(params))
    row = session.execute(
        text(
            "INSERT INTO bulkops_ledger.jobs (kind, state, params, idempotency_key, "
            "celery_task_id) "
            "VALUES (:kind, :queued, CAST(:params AS jsonb), :key, :task_id) "
            "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
        ),
        {
            "kind": kind,
            **STATES,
            "params": to_json(params),
            "key": key,
            "task_id": task_id,
        },
    ).first()
    if row is not None:
        return int(row.id), True
    existing = session.execute(
        text("SELECT id, kind, params FROM bulkops_ledger.jobs WHERE idempotency_key = :key"),
        {"key": key},
    ).one()
    if existing.kind != kind:
        raise UsageError(
            f"idempotency key {key!r} already belongs to job {existing.id} of kind {existing.kind}"
        )
    submitted, mine = _comparable(kind, existing.params), _comparable(kind, wanted)
    if submitted != mine:
        differ = sorted(k for k in set(submitted) | set(mine) if submitted.get(k) != mine.get(k))
        raise UsageError(
            f"idempotency key {key!r} already belongs to job {existing.id}, submitted "
            f"with other parameters ({', '.join(differ)}); use another key"
        )
    return int(existing.id), False


def remove_unsent(session: Session, job_id: int) -> None:
    """The message of a new job could not be sent: its row goes, unless a worker took it."""
    session.execute(
        text("DELETE FROM bulkops_ledger.jobs WHERE id = :id AND state = :queued"),
        {"id": job_id, **STATES},
    )


def to_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


# --- claim and plan ------------------------------------------------------------------


def claim(job_id: int, max_attempts: int) -> Job | None:
    """Take the job for planning, committed at once; the caller holds its planner lock.

    Claimable: ``queued``, or ``running`` with no plan yet (its planner died:
    it holds no lock, the caller does). Each claim counts an attempt; one past
    ``max_attempts`` fails the job (a poison plan). A running job already
    planned is returned as it is (its fan-out is resumed); None when the job
    is finished, cancelling or unknown.
    """
    with session_scope() as session:
        row = session.execute(
            text(
                "UPDATE bulkops_ledger.jobs SET state = :running, attempts = attempts + 1, "
                "started_at = coalesce(started_at, now()), heartbeat_at = now() "
                "WHERE id = :id AND (state = :queued "
                "OR (state = :running AND chunks_total IS NULL)) "
                "RETURNING attempts"
            ),
            {"id": job_id, **STATES},
        ).first()
        if row is not None and row.attempts > max_attempts:
            _fail(session, job_id, poison_plan(max_attempts))
            return None
        job = session.get(Job, job_id, populate_existing=True)
    return job if job is not None and job.state == JobState.RUNNING else None


def unclaim(job_id: int) -> None:
    """Planning ended on an error (not a death): the job is queued again, that attempt uncounted."""
    with session_scope() as session:
        session.execute(
            text(
                "UPDATE bulkops_ledger.jobs "
                "SET state = :queued, attempts = greatest(attempts - 1, 0) "
                "WHERE id = :id AND state = :running AND chunks_total IS NULL"
            ),
            {"id": job_id, **STATES},
        )


def store_plan(session: Session, job_id: int, specs: list[dict[str, Any]]) -> bool:
    """Store the chunk specs in the plan's transaction; False if the job stopped meanwhile."""
    row = session.execute(
        text(
            "UPDATE bulkops_ledger.jobs SET heartbeat_at = now(), "
            "params = (params - :early) || jsonb_build_object('chunks', CAST(:specs AS jsonb)) "
            "WHERE id = :id AND state = :running RETURNING id"
        ),
        {"id": job_id, "specs": to_json(specs), "early": EARLY_SPECS, **STATES},
    ).first()
    return row is not None


def store_early_spec(session: Session, job_id: int, spec: dict[str, Any]) -> bool:
    """Add the next chunk a plan hands over before it ends; False if the job stopped.

    A plan started over (its planner died) hands the same chunks over again:
    each is stored once.
    """
    row = session.execute(
        text(
            "UPDATE bulkops_ledger.jobs SET heartbeat_at = now(), params = CASE "
            "WHEN coalesce(jsonb_array_length(params -> :early), 0) = :n THEN params || "
            "  jsonb_build_object(CAST(:early AS text), "
            "    coalesce(params -> :early, '[]') || jsonb_build_array(CAST(:spec AS jsonb))) "
            "ELSE params END "
            "WHERE id = :id AND state = :running RETURNING id"
        ),
        {
            "id": job_id,
            "spec": to_json(spec),
            "n": spec["chunk_no"],
            "early": EARLY_SPECS,
            **STATES,
        },
    ).first()
    return row is not None


def plan_of(job_id: int) -> list[dict[str, Any]]:
    """A job's stored chunk specs ([] before its plan)."""
    with session_scope() as session:
        specs = session.execute(
            text("SELECT params -> 'chunks' FROM bulkops_ledger.jobs WHERE id = :id"),
            {"id": job_id},
        ).scalar()
    return list(specs or [])


def set_param(session: Session, job_id: int, name: str, value: Any) -> None:
    """Add one key to a job's params (e.g. a dry run's breakdown), in the plan's transaction."""
    session.execute(
        text(
            "UPDATE bulkops_ledger.jobs "
            "SET params = params || jsonb_build_object(CAST(:name AS text), "
            "CAST(:value AS jsonb)) WHERE id = :id"
        ),
        {"id": job_id, "name": name, "value": to_json(value)},
    )


def set_planned(job_id: int, chunks_total: int) -> str:
    """Every chunk was sent: record the total, and finish the job if all are done already."""
    with session_scope() as session:
        row = session.execute(
            text(
                "UPDATE bulkops_ledger.jobs SET chunks_total = :n, heartbeat_at = now(), "
                f"{_FINISH_IF_DONE} "
                "WHERE id = :id AND state IN (:running, :cancelling) RETURNING state"
            ),
            {"id": job_id, "n": chunks_total, **STATES},
        ).first()
    return str(row.state) if row else ""


def resume_requested(job: Job) -> bool:
    """Recovery re-sent this planned job since its last sign of life (its chunks were lost)."""
    return job.resent_at is not None and (
        job.heartbeat_at is None or job.resent_at > job.heartbeat_at
    )


def touch(job_id: int) -> None:
    """A sign of life from the job's planner (its fan-out was resumed)."""
    with session_scope() as session:
        session.execute(
            text("UPDATE bulkops_ledger.jobs SET heartbeat_at = now() WHERE id = :id"),
            {"id": job_id},
        )


# --- chunks commit -------------------------------------------------------------------

# The state a running job takes once ``chunks_done`` reaches ``:n`` (its total).
_FINISH_IF_DONE = """
    state = CASE WHEN state = :running AND chunks_done >= :n THEN
                 CASE WHEN rows_rejected > 0 THEN :partially_succeeded ELSE :succeeded END
            ELSE state END,
    finished_at = CASE WHEN state = :running AND chunks_done >= :n THEN clock_timestamp()
                  ELSE finished_at END
"""


def running_job(session: Session, job_id: int) -> Job | None:
    """The job, if its chunks may run now (running, not cancelling or finished)."""
    job = session.get(Job, job_id, populate_existing=True)
    return job if job is not None and job.state == JobState.RUNNING else None


def state_of(job_id: int) -> str:
    with session_scope() as session:
        state = session.execute(
            text("SELECT state FROM bulkops_ledger.jobs WHERE id = :id"), {"id": job_id}
        )
        return str(state.scalar() or "missing")


def record_chunk(
    session: Session, job_id: int, counts: ChunkCounts, batch_s: float | None = None
) -> tuple[int, int | None, str] | None:
    """Add a committed chunk's counters; the last chunk finishes the job.

    Runs inside the chunk's own transaction, after its data and its
    ``job_chunks`` row. None if the job is no longer running or cancelling
    (failed, or cancelled while this chunk was not yet counted as in flight):
    the caller rolls the chunk back, so a final state's counts never change.
    A job past its error limits (``max_errors``, ``max_error_rate`` in its
    params) ends ``failed``, naming the limit; what committed stays. Returns
    (chunks_done, chunks_total, state).
    """
    row = session.execute(
        text(
            """
            UPDATE bulkops_ledger.jobs SET
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
                    WHEN state = :running AND chunks_done + 1 >= chunks_total THEN
                        CASE WHEN rows_rejected + :rejected > 0 THEN :partially_succeeded
                             ELSE :succeeded END
                    ELSE state END,
                finished_at = CASE
                    WHEN state = :running AND chunks_done + 1 >= chunks_total
                    THEN clock_timestamp()
                    ELSE finished_at END
            WHERE id = :id AND state IN (:running, :cancelling)
            RETURNING chunks_done, chunks_total, state, rows_read, rows_rejected,
                      params->'max_errors' AS max_errors, params->'max_error_rate' AS max_rate
            """
        ),
        {"id": job_id, "batch_s": batch_s, **asdict(counts), **STATES},
    ).first()
    if row is None:
        return None
    state = str(row.state)
    limit = error_limit_passed(row.rows_read, row.rows_rejected, row.max_errors, row.max_rate)
    if limit and state in (JobState.RUNNING, JobState.SUCCEEDED, JobState.PARTIALLY_SUCCEEDED):
        _fail(session, job_id, limit, also_finished=True)
        state = JobState.FAILED.value
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
    """Add counters for work done outside a chunk (e.g. an ids file's bad lines, in the plan).

    Call it last in the plan: it locks the job row until the plan commits.
    """
    session.execute(
        text(
            "UPDATE bulkops_ledger.jobs SET rows_read = rows_read + :read, "
            "rows_inserted = rows_inserted + :inserted, rows_updated = rows_updated + :updated, "
            "rows_skipped = rows_skipped + :skipped, rows_rejected = rows_rejected + :rejected "
            "WHERE id = :id"
        ),
        {"id": job_id, **asdict(counts)},
    )


# --- fail, cancel ----------------------------------------------------------------------


def _fail(session: Session, job_id: int, message: str, also_finished: bool = False) -> None:
    states = "(:queued, :running, :cancelling, :succeeded, :partially_succeeded)"
    if not also_finished:
        states = "(:queued, :running, :cancelling)"
    session.execute(
        text(
            "UPDATE bulkops_ledger.jobs SET state = :failed, error = :error, "
            f"finished_at = coalesce(finished_at, now()) WHERE id = :id AND state IN {states}"
        ),
        {"id": job_id, "error": pg_text(message[:4000]), **STATES},
    )


def fail(job_id: int, error: BaseException | str) -> None:
    """Mark a job failed with its error, in its own transaction (finished jobs stay)."""
    message = error.message if isinstance(error, BulkopsError) else str(error)
    with session_scope() as session:
        _fail(session, job_id, message or type(error).__name__)


def cancel(job_id: int) -> str:
    """Ask a job to stop after its in-flight chunks; returns its state afterwards.

    A queued job is ``cancelled`` at once. A running one is ``cancelling``
    until its planner and in-flight chunks have ended (each settles it as it
    ends; recovery too), then ``cancelled`` with its final counts.
    """
    with session_scope() as session:
        state = request_cancel(session, job_id)
    return chunks.settle_cancel(job_id) or state


def request_cancel(session: Session, job_id: int) -> str:
    """The first step of :func:`cancel`, in the caller's transaction; the job's state."""
    row = session.execute(
        text(
            """
            UPDATE bulkops_ledger.jobs SET cancel_requested = true,
                state = CASE WHEN state = :queued THEN :cancelled
                             WHEN state = :running THEN :cancelling ELSE state END,
                finished_at = CASE WHEN state = :queued THEN clock_timestamp()
                                   ELSE finished_at END
            WHERE id = :id RETURNING state
            """
        ),
        {"id": job_id, **STATES},
    ).first()
    if row is None:
        raise JobNotFound(f"no job with id {job_id}")
    return str(row.state)


def add_rejects(
    session: Session, job_id: int, chunk_no: int, rejects: Sequence[RejectedRow]
) -> None:
    """The rejects, in the caller's transaction: one COPY (a chunk may have thousands)."""
    copy_rows(
        session,
        "bulkops_ledger.job_rejects",
        ("job_id", "chunk_no", "line", '"column"', "reason", "raw"),
        [(job_id, chunk_no, r.line, r.column, r.reason, r.raw) for r in map(storable, rejects)],
    )


# --- reading -------------------------------------------------------------------------


# Each reader has a session-taking core (``read_*``), so worker.aclient runs the
# very same queries through ``AsyncSession.run_sync``.


def get_summary(job_id: int) -> JobSummary:
    with session_scope() as session:
        return read_summary(session, job_id)


def read_summary(session: Session, job_id: int) -> JobSummary:
    """One query: the job row (its counters are the summary)."""
    job = session.get(Job, job_id)
    if job is None:
        raise JobNotFound(f"no job with id {job_id}")
    return summarize(job)


def list_jobs(limit: int = 20, state: str | None = None) -> list[JobSummary]:
    with session_scope() as session:
        return read_jobs(session, limit, state)


def read_jobs(session: Session, limit: int = 20, state: str | None = None) -> list[JobSummary]:
    """One query for the page of jobs (no per-job query: the counters are on the row)."""
    query = select(Job).order_by(Job.id.desc()).limit(limit)  # type: ignore[union-attr]
    if state:
        if state not in {s.value for s in JobState}:
            raise UsageError(f"unknown job state {state!r}")
        query = query.where(Job.state == state)
    return [summarize(job) for job in session.exec(query).all()]


def upload_params(conn: Connection) -> list[dict[str, Any]]:
    """Every job's upload reference (``bulkops reset``: the large objects the jobs own).

    Nothing when the ledger has no table yet (a database never migrated).
    """
    if conn.execute(text("SELECT to_regclass('bulkops_ledger.jobs')")).scalar() is None:
        return []
    rows = conn.execute(
        text(
            "SELECT params -> 'upload' FROM bulkops_ledger.jobs "
            "WHERE params -> 'upload' IS NOT NULL"
        )
    )
    return [r[0] for r in rows if isinstance(r[0], dict)]


def jobs_in(states: Sequence[str], limit: int = 20) -> list[JobSummary]:
    """The newest jobs in any of ``states`` (e.g. queued and running, for ``jobs --watch``)."""
    with session_scope() as session:
        query = (
            select(Job)
            .where(Job.state.in_(list(states)))  # type: ignore[attr-defined]
            .order_by(Job.id.desc())  # type: ignore[union-attr]
            .limit(limit)
        )
        return [summarize(job) for job in session.exec(query).all()]


# Outcomes of input rows, as counted on the job row (``rows_<outcome>``).
ROW_OUTCOMES = ("read", "inserted", "updated", "skipped", "rejected")


@dataclass(frozen=True)
class LedgerTotals:
    """Counters summed over every job in the ledger, for the metrics exporter.

    Each only grows while jobs are kept (a chunk's counts are added once, and
    a final state never changes them), so Prometheus can take its ``rate()``.
    """

    rows: dict[tuple[str, str], int]  # (kind, outcome) -> rows
    chunks: dict[str, int]  # kind -> chunks committed
    jobs: dict[tuple[str, str], int]  # (kind, state) -> jobs


def totals() -> LedgerTotals:
    """Rows by kind and outcome, chunks by kind, jobs by kind and state (one scan of jobs)."""
    sums = ", ".join(f"coalesce(sum(rows_{o}), 0) AS {o}" for o in ROW_OUTCOMES)
    with session_scope() as session:
        result = session.execute(
            text(
                f"SELECT kind, state, count(*) AS n, coalesce(sum(chunks_done), 0) AS chunks, "
                f"{sums} FROM bulkops_ledger.jobs GROUP BY kind, state ORDER BY kind, state"
            )
        ).all()
    rows: dict[tuple[str, str], int] = {}
    chunks_done: dict[str, int] = {}
    jobs: dict[tuple[str, str], int] = {}
    for r in result:
        kind = str(r.kind)
        jobs[(kind, str(r.state))] = int(r.n)
        chunks_done[kind] = chunks_done.get(kind, 0) + int(r.chunks)
        for outcome in ROW_OUTCOMES:
            rows[(kind, outcome)] = rows.get((kind, outcome), 0) + int(getattr(r, outcome))
    return LedgerTotals(rows, chunks_done, jobs)


def finished_upload(job_id: int) -> Any | None:
    """A finished job's ``params.upload`` (where its uploaded file is); None while it runs."""
    with session_scope() as session:
        row = session.execute(
            # Not the whole params: an import's holds its plan (every chunk).
            text(
                "SELECT state, params -> 'upload' AS upload FROM bulkops_ledger.jobs WHERE id = :id"
            ),
            {"id": job_id},
        ).first()
    if row is None or row.state not in FINISHED_STATES:
        return None
    return row.upload


def celery_task_id(job_id: int) -> str | None:
    with session_scope() as session:
        return session.execute(
            text("SELECT celery_task_id FROM bulkops_ledger.jobs WHERE id = :id"), {"id": job_id}
        ).scalar()


def get_rejects(job_id: int, limit: int | None = None) -> list[RejectedRow]:
    with session_scope() as session:
        return read_rejects(session, job_id, limit)


def read_rejects(session: Session, job_id: int, limit: int | None = None) -> list[RejectedRow]:
    """Two queries whatever the count: the job (does it exist?), then its rejects in line order."""
    if session.get(Job, job_id) is None:
        raise JobNotFound(f"no job with id {job_id}")
    return _rejects_of(session, job_id, limit)


def read_job_and_rejects(
    session: Session, job_id: int, limit: int | None = None
) -> tuple[JobSummary, list[RejectedRow]]:
    """A job's summary and its rejects: two queries, whatever their number."""
    return read_summary(session, job_id), _rejects_of(session, job_id, limit)


def _rejects_of(session: Session, job_id: int, limit: int | None) -> list[RejectedRow]:
    query = (
        select(JobReject).where(JobReject.job_id == job_id).order_by(JobReject.line, JobReject.id)  # type: ignore[arg-type]
    )
    if limit is not None:
        query = query.limit(limit)
    return [
        RejectedRow(line=r.line, column=r.column, reason=r.reason, raw=r.raw)
        for r in session.exec(query).all()
    ]
