"""Chunks of a job: who works on them now, which committed, which died.

Liveness is something PostgreSQL knows now, not a timestamp. A worker that
plans a job or runs a chunk holds a session-level advisory lock on its own
connection for as long as it works: ``(job key, chunk_no)`` for a chunk,
``(job key, PLANNER)`` for the plan and fan-out. A worker that dies (SIGKILL,
the OOM killer, the hard time limit) loses its sockets; PostgreSQL ends its
backends and the lock is gone at once (``client_connection_check_interval``
makes a backend notice a dead client even in the middle of a statement). A
slow worker keeps its lock however long it takes, so it is never seen as dead.

This module owns every statement on ``job_chunks`` and ``job_chunk_starts``;
:mod:`worker.ledger` owns ``jobs``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text
from sqlmodel import Session

from worker.db import get_engine, session_scope, translated
from worker.models import JobState

# The advisory lock of a job's planner: (job key, PLANNER). Chunk numbers stay below it.
PLANNER = 2**31 - 1
# Job ids are bigint, advisory lock keys int4: the key is the id modulo this.
_JOB_KEY_MOD = 2**31 - 1
# A backend whose client died mid-statement notices within this many ms (PostgreSQL 14+).
CLIENT_CHECK_INTERVAL_MS = 2000
# Server-side keepalives of a worker's lock connection: a host that vanished (no
# FIN) is seen dead after about idle + interval * count seconds (ignored on sockets).
TCP_KEEPALIVES = {
    "tcp_keepalives_idle": 10,
    "tcp_keepalives_interval": 5,
    "tcp_keepalives_count": 3,
}
# A second delivery waits this long for a dead predecessor's backend to end (a
# pool process killed: its message is requeued at once), then leaves the work to
# the live holder (polling every LOCK_POLL_S). Generous: a loaded server may take
# a while, and a duplicate of a live chunk is rare (recovery never sends one).
HOLDER_GRACE_S = 10 * CLIENT_CHECK_INTERVAL_MS / 1000
LOCK_POLL_S = 0.2


# Every job state as a bound parameter (``:running`` ...): no state literal in SQL.
STATES = {s.name.lower(): s.value for s in JobState}


def poison_plan(max_attempts: int) -> str:
    return (
        f"the job was planned {max_attempts} times and its worker died each time (killed, "
        "out of memory or past the hard time limit); giving up"
    )


def job_key(job_id: int) -> int:
    return job_id % _JOB_KEY_MOD


# The advisory locks held right now in this database: (job key, chunk_no or PLANNER).
# "Alive" means a row here; "dead" means work started but no row here.
HELD_LOCKS = (
    "held AS MATERIALIZED (SELECT CAST(l.classid AS int8) AS k1, CAST(l.objid AS int8) AS k2 "
    "FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
)


def held_by_job(job_expr: str) -> str:
    """SQL: someone (planner or chunk) holds a lock of the job ``job_expr`` now."""
    return f"EXISTS (SELECT 1 FROM held h WHERE h.k1 = {job_expr} % {_JOB_KEY_MOD})"


def held(job_expr: str, k2_expr: str) -> str:
    """SQL: the lock (job, k2) is held now."""
    return (
        f"EXISTS (SELECT 1 FROM held h WHERE h.k1 = {job_expr} % {_JOB_KEY_MOD} "
        f"AND h.k2 = {k2_expr})"
    )


# --- holding a lock ------------------------------------------------------------------


def _try_lock(conn: Connection, key: int, k2: int) -> bool:
    deadline = time.monotonic() + HOLDER_GRACE_S
    while True:
        got = conn.execute(
            text("SELECT pg_try_advisory_lock(CAST(:k1 AS int4), CAST(:k2 AS int4))"),
            {"k1": key, "k2": k2},
        ).scalar_one()
        conn.commit()
        if got or time.monotonic() >= deadline:
            return bool(got)
        time.sleep(LOCK_POLL_S)


@contextlib.contextmanager
def holding(job_id: int, k2: int) -> Iterator[Connection | None]:
    """Hold the lock (job, k2) on a connection of its own for the block.

    Yields the connection (the caller works on it, in transactions of its own),
    or None if a live worker holds the lock after HOLDER_GRACE_S. The grace
    lets a redelivery after a crash wait for the dead backend to go.
    """
    with translated():
        conn = get_engine().connect()
    try:
        with translated():
            conn.execute(text(f"SET client_connection_check_interval = {CLIENT_CHECK_INTERVAL_MS}"))
            # A lost node sends no FIN: the server's keepalives find it instead.
            for name, value in TCP_KEEPALIVES.items():
                conn.execute(text(f"SET {name} = {value}"))
            got = _try_lock(conn, job_key(job_id), k2)
        if not got:
            yield None
            return
        try:
            yield conn
        finally:
            try:
                with translated():
                    conn.rollback()
                    conn.execute(
                        text("SELECT pg_advisory_unlock(CAST(:k1 AS int4), CAST(:k2 AS int4))"),
                        {"k1": job_key(job_id), "k2": k2},
                    )
                    conn.commit()
            except Exception:
                # A lock left on a pooled connection would keep the work "alive" for
                # good: drop the connection instead (its backend ends, the lock with it).
                conn.invalidate()
    finally:
        conn.close()


@contextlib.contextmanager
def transaction(conn: Connection, statement_timeout_ms: int | None = None) -> Iterator[Session]:
    """A session on ``conn``: commit on success, roll back on error (as session_scope)."""
    conn.commit()  # the session must begin (and so commit) a transaction of its own
    with Session(bind=conn, expire_on_commit=False) as session:
        try:
            with translated():
                if statement_timeout_ms is not None:
                    session.execute(
                        text(f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}")
                    )
                yield session
                session.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                session.rollback()
            raise


# --- starts and commits ----------------------------------------------------------------


def committed(conn: Connection, job_id: int, chunk_no: int) -> bool:
    with translated():
        found = conn.execute(
            text("SELECT 1 FROM bulkops_ledger.job_chunks WHERE job_id = :id AND chunk_no = :n"),
            {"id": job_id, "n": chunk_no},
        ).first()
        conn.commit()
    return found is not None


def start(conn: Connection, job_id: int, chunk_no: int) -> int:
    """Count a start of the chunk, committed now; returns the unfinished starts so far.

    Starts whose worker died are never ended: past BULKOPS_MAX_ATTEMPTS the
    chunk is a poison chunk.
    """
    with translated():
        n = conn.execute(
            text(
                "INSERT INTO bulkops_ledger.job_chunk_starts (job_id, chunk_no, unfinished) "
                "VALUES (:id, :n, 1) ON CONFLICT (job_id, chunk_no) DO UPDATE SET "
                "unfinished = job_chunk_starts.unfinished + 1, started_at = now() "
                "RETURNING unfinished"
            ),
            {"id": job_id, "n": chunk_no},
        ).scalar_one()
        conn.commit()
    return int(n)


def end(conn: Connection, job_id: int, chunk_no: int) -> None:
    """The chunk ended (committed, rolled back or raised): this start does not count."""
    with translated():
        conn.rollback()
        conn.execute(
            text(
                "UPDATE bulkops_ledger.job_chunk_starts "
                "SET unfinished = greatest(unfinished - 1, 0) "
                "WHERE job_id = :id AND chunk_no = :n"
            ),
            {"id": job_id, "n": chunk_no},
        )
        conn.commit()


def insert_committed(session: Session, job_id: int, chunk_no: int, worker: str | None) -> bool:
    """Write the chunk's ``job_chunks`` row in its transaction; False if it committed before."""
    row = session.execute(
        text(
            "INSERT INTO bulkops_ledger.job_chunks (job_id, chunk_no, worker) VALUES (:id, :n, :w) "
            "ON CONFLICT DO NOTHING RETURNING chunk_no"
        ),
        {"id": job_id, "n": chunk_no, "w": worker},
    ).first()
    return row is not None


def record_counts(
    session: Session, job_id: int, chunk_no: int, counts: Any, elapsed_s: float
) -> None:
    """The chunk's own counters (``counts`` is a ledger.ChunkCounts)."""
    session.execute(
        text(
            "UPDATE bulkops_ledger.job_chunks SET rows_read = :read, rows_inserted = :inserted, "
            "rows_updated = :updated, rows_skipped = :skipped, rows_rejected = :rejected, "
            "elapsed_s = :elapsed WHERE job_id = :id AND chunk_no = :n"
        ),
        {
            "id": job_id,
            "n": chunk_no,
            "elapsed": elapsed_s,
            "read": counts.read,
            "inserted": counts.inserted,
            "updated": counts.updated,
            "skipped": counts.skipped,
            "rejected": counts.rejected,
        },
    )


def committed_set(job_id: int) -> set[int]:
    """The job's committed chunks."""
    with session_scope() as session:
        return {
            int(r[0])
            for r in session.execute(
                text("SELECT chunk_no FROM bulkops_ledger.job_chunks WHERE job_id = :id"),
                {"id": job_id},
            )
        }


def pending(job_id: int, total: int) -> list[int]:
    """Chunks of the job to send: not committed and not running anywhere now."""
    with session_scope() as session:
        return [
            int(r[0])
            for r in session.execute(
                text(
                    f"WITH {HELD_LOCKS} SELECT n FROM generate_series(0, :total - 1) n "
                    "WHERE NOT EXISTS (SELECT 1 FROM bulkops_ledger.job_chunks c "
                    "WHERE c.job_id = :id AND c.chunk_no = n) "
                    f"AND NOT {held(':id', 'n')} ORDER BY n"
                ),
                {"id": job_id, "total": total},
            )
        ]


def workers_of(job_ids: Sequence[int]) -> dict[int, list[str]]:
    """The workers (Celery node names) that committed chunks of each job, by name."""
    if not job_ids:
        return {}
    with session_scope() as session:
        rows = session.execute(
            text(
                "SELECT DISTINCT job_id, worker FROM bulkops_ledger.job_chunks "
                "WHERE job_id = ANY(:ids) AND worker IS NOT NULL ORDER BY job_id, worker"
            ),
            {"ids": list(job_ids)},
        ).all()
    found: dict[int, list[str]] = {}
    for row in rows:
        found.setdefault(int(row.job_id), []).append(str(row.worker))
    return found


# --- dead chunks (recovery) ---------------------------------------------------------------


@dataclass(frozen=True, order=True)
class DeadChunk:
    job_id: int
    chunk_no: int
    kind: str


# A dead chunk (start row ``s``): started and never ended, not committed, and
# nobody holds its lock. Its job is running; it is sent again once per death (or
# once per period, if that message was lost too).
_DEAD_START = f"""
    s.unfinished > 0
    AND NOT EXISTS (SELECT 1 FROM bulkops_ledger.job_chunks c
                    WHERE c.job_id = s.job_id AND c.chunk_no = s.chunk_no)
    AND NOT {held("s.job_id", "s.chunk_no")}
"""
_DEAD_CHUNKS = f"""
    WITH {HELD_LOCKS}
    UPDATE bulkops_ledger.job_chunk_starts s SET resent_at = now()
    FROM bulkops_ledger.jobs j
    WHERE j.id = s.job_id AND j.state = :running AND {_DEAD_START}
      AND (s.resent_at IS NULL OR s.resent_at < s.started_at
           OR s.resent_at < now() - make_interval(secs => :period))
    RETURNING s.job_id, s.chunk_no, j.kind
"""


def take_dead(period_s: float) -> list[DeadChunk]:
    """Dead chunks to send again, marked as sent (commit before sending)."""
    with session_scope() as session:
        rows = session.execute(text(_DEAD_CHUNKS), {"period": period_s, **STATES}).all()
    return sorted(DeadChunk(int(r.job_id), int(r.chunk_no), str(r.kind)) for r in rows)


_SETTLE = f"""
    WITH {HELD_LOCKS}
    UPDATE bulkops_ledger.jobs j SET state = :cancelled, finished_at = clock_timestamp()
    WHERE j.state = :cancelling AND NOT {held_by_job("j.id")}
"""


def settle_cancel(job_id: int) -> str:
    """A cancelling job with nothing in flight any more becomes ``cancelled``; its state."""
    with session_scope() as session:
        return settle_cancel_in(session, job_id)


def settle_cancel_in(session: Session, job_id: int) -> str:
    """:func:`settle_cancel` in the caller's transaction (worker.aclient)."""
    row = session.execute(
        text(_SETTLE + " AND j.id = :id RETURNING j.state"), {"id": job_id, **STATES}
    ).first()
    return str(row.state) if row else ""


# --- stuck and dead (recovery, health) -------------------------------------------------

# A job is *stuck* when nothing in PostgreSQL says it is alive and its message may
# be lost: queued this long, or running, planned, with no chunk in flight and no
# chunk committed this long. Its planner is *dead* when it is running without a
# plan and nobody holds its planner lock (dead chunks: _DEAD_START).
_STUCK = f"""
    (j.state = :queued AND j.updated_at < now() - make_interval(secs => :s))
    OR (j.state = :running AND j.chunks_total IS NOT NULL
        AND j.heartbeat_at < now() - make_interval(secs => :s) AND NOT {held_by_job("j.id")})
"""
_DEAD_PLANNER = (
    f"j.state = :running AND j.chunks_total IS NULL AND NOT {held('j.id', str(PLANNER))}"
)


@dataclass(frozen=True, order=True)
class Resend:
    job_id: int
    kind: str
    task_id: str


def fail_dead_planners(max_attempts: int) -> list[int]:
    """Jobs whose planner died ``max_attempts`` times end failed (a poison plan)."""
    with session_scope() as session:
        rows = session.execute(
            text(
                f"WITH {HELD_LOCKS} UPDATE bulkops_ledger.jobs j SET state = :failed, "
                "finished_at = now(), error = :error "
                f"WHERE {_DEAD_PLANNER} AND j.attempts >= :max RETURNING j.id"
            ),
            {"max": max_attempts, "error": poison_plan(max_attempts), **STATES},
        ).all()
    return sorted(int(r.id) for r in rows)


def take_resends(stuck_after_s: float) -> list[Resend]:
    """Jobs to send again (stuck, or their planner dead), marked as sent: at most once
    per period, and once per claim for a dead planner."""
    with session_scope() as session:
        rows = session.execute(
            text(
                f"WITH {HELD_LOCKS} UPDATE bulkops_ledger.jobs j SET resent_at = now() "
                f"WHERE (({_STUCK}) AND (j.resent_at IS NULL "
                "OR j.resent_at < now() - make_interval(secs => :s))) "
                f"OR (({_DEAD_PLANNER}) AND (j.resent_at IS NULL OR j.resent_at < j.heartbeat_at "
                "OR j.resent_at < now() - make_interval(secs => :s))) "
                "RETURNING j.id, j.kind, j.celery_task_id"
            ),
            {"s": stuck_after_s, **STATES},
        ).all()
    return sorted(Resend(int(r.id), str(r.kind), str(r.celery_task_id)) for r in rows)


def settle_cancels() -> list[int]:
    """Every cancelling job with nothing in flight becomes cancelled (a worker died settling)."""
    with session_scope() as session:
        rows = session.execute(text(_SETTLE + " RETURNING j.id"), STATES).all()
    return sorted(int(r.id) for r in rows)


def health_counts(session: Session, stuck_after_s: float) -> tuple[dict[str, int], int, int]:
    """(jobs by state, stuck queued, stuck or dead running) for the health check."""
    by_state = {
        str(state): int(count)
        for state, count in session.execute(
            text("SELECT state, count(*) FROM bulkops_ledger.jobs GROUP BY state")
        )
    }
    row = session.execute(
        text(
            f"WITH {HELD_LOCKS} SELECT "
            "count(*) FILTER (WHERE j.state = :queued AND "
            f"({_STUCK})), count(*) FILTER (WHERE j.state = :running AND "
            f"(({_STUCK}) OR ({_DEAD_PLANNER}) OR EXISTS (SELECT 1 FROM "
            "bulkops_ledger.job_chunk_starts s "
            f"WHERE s.job_id = j.id AND {_DEAD_START}))) FROM bulkops_ledger.jobs j "
            "WHERE j.state IN (:queued, :running)"
        ),
        {"s": stuck_after_s, **STATES},
    ).one()
    return by_state, int(row[0]), int(row[1])
