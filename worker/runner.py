"""Chunked jobs, exactly once: plan, fan out, run each chunk in its own transaction.

Celery-agnostic: the tasks pass in how to enqueue a chunk. Orchestration
only: every statement is in :mod:`worker.ledger` and :mod:`worker.chunks`.
A chunk runs holding its lock (a duplicate delivery leaves it to the live
holder); its ``job_chunks`` row commits together with the chunk's data, its
rejects and the job's counters. The chunk that brings ``chunks_done`` to
``chunks_total`` finishes the job in that same statement, so there is no
chord and nothing to hang.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Connection
from sqlmodel import Session

from worker import chunks, ledger
from worker.config import get_settings
from worker.db import session_scope
from worker.models import Job, JobState
from worker.summary import ChunkCounts, RejectedRow

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkResult:
    counts: ChunkCounts
    rejects: list[RejectedRow] = field(default_factory=list)
    batch_s: float | None = None


# Hands a chunk to the workers before the plan ends: (its spec, what to write with it).
ReadyFn = Callable[[dict[str, Any], Callable[[Session], None]], None]


class Operation(Protocol):
    """A kind of bulk job, as plain functions over a session."""

    kind: str

    def plan(self, session: Session, job: Job, ready: ReadyFn) -> list[dict[str, Any]]:
        """Set the job up and return one JSON-able spec per chunk (stored on the job).

        A chunk that needs nothing the rest of the plan finds may be handed
        over at once, in order from chunk 0: ``ready(spec, write)`` commits its
        spec with whatever ``write`` adds, and sends it.
        """
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
    specs: list[dict[str, Any]] | None = None  # the plan, when its chunks come in phases


EnqueueFn = Callable[[int, int], None]

# Share of the soft time limit a single statement of a chunk may take.
STATEMENT_TIMEOUT_SHARE = 0.9


def start_job(job_id: int, operation: Operation, enqueue: EnqueueFn) -> int:
    """Claim the job, plan it once, enqueue every chunk not yet committed nor running.

    The planner holds the job's planner lock throughout (its liveness: a second
    delivery leaves the job to it, recovery sees it alive however long the plan
    takes). The claim commits on its own, so a worker that dies while planning
    has counted its attempt. The plan runs in a transaction of its own that
    commits the specs with whatever the plan wrote. Safe to call again for the
    same job (redelivery, recovery). Returns how many chunks were enqueued.
    """
    with chunks.holding(job_id, chunks.PLANNER) as conn:
        if conn is None:
            logger.info("job is being planned elsewhere", extra={"job_id": job_id})
            return 0
        job = ledger.claim(job_id, get_settings().bulkops_max_attempts)
        if job is None:
            logger.info("job not claimable (finished or cancelled)", extra={"job_id": job_id})
            return 0
        if job.chunks_total is not None:  # planned and sent before
            if not ledger.resume_requested(job):
                logger.info("job already planned and running", extra={"job_id": job_id})
                return 0
            # recovery found it stuck (its chunk messages lost): send them again
            missing = _ready(job_id, job.params["chunks"], chunks.pending(job_id, job.chunks_total))
            for chunk_no in missing:
                enqueue(job_id, chunk_no)
            ledger.touch(job_id)
            logger.info("job resumed", extra={"job_id": job_id, "enqueued": len(missing)})
            return len(missing)
        try:
            early: list[int] = []  # chunks sent before the plan ended
            specs = _plan(conn, job, operation, _early_sender(job_id, enqueue, early))
            total = None if specs is None else len(specs)
            pending = [] if specs is None else chunks.pending(job_id, len(specs))
            missing = [] if specs is None else _ready(job_id, specs, pending)
            missing = [n for n in missing if n not in early]
            for chunk_no in missing:
                enqueue(job_id, chunk_no)
            if total is not None:
                ledger.set_planned(job_id, total)
        except BaseException:
            ledger.unclaim(job_id)  # not a death: the retry (or failure) decides
            raise
    chunks.settle_cancel(job_id)
    logger.info("job planned", extra={"job_id": job_id, "chunks": total, "enqueued": len(missing)})
    return len(missing)


def _early_sender(job_id: int, enqueue: EnqueueFn, sent: list[int]) -> ReadyFn:
    """What a plan calls to hand over its next chunk early: committed, then sent."""

    def ready(spec: dict[str, Any], write: Callable[[Session], None]) -> None:
        with session_scope() as session:
            write(session)
            running = ledger.store_early_spec(session, job_id, spec)
        if running:
            enqueue(job_id, int(spec["chunk_no"]))
            sent.append(int(spec["chunk_no"]))

    return ready


def chunk_spec(params: dict[str, Any], chunk_no: int) -> dict[str, Any] | None:
    """A chunk's spec from the job's plan, or from the chunks it handed over early."""
    specs = params.get("chunks") or params.get(ledger.EARLY_SPECS) or []
    return specs[chunk_no] if chunk_no < len(specs) else None


def _plan(
    conn: Connection, job: Job, operation: Operation, ready: ReadyFn
) -> list[dict[str, Any]] | None:
    """The chunk specs; plans first if no plan is stored. None if the job stopped meanwhile."""
    assert job.id is not None
    stored: list[dict[str, Any]] | None = job.params.get("chunks")
    if stored is not None:
        return stored
    with chunks.transaction(conn) as session:
        specs = operation.plan(session, job, ready)
        if not ledger.store_plan(session, job.id, specs):
            session.rollback()  # cancelled while planning: keep nothing of the plan
            return None
    return specs


def _phase(spec: Any) -> int:
    return int(spec.get("phase") or 0) if isinstance(spec, dict) else 0


def _ready(job_id: int, specs: list[dict[str, Any]], candidates: list[int]) -> list[int]:
    """Of ``candidates``, the chunks that may run now: every chunk of an earlier phase committed.

    A spec's ``phase`` (default 0) orders chunks that need others' data (a
    seed's children need their parents): phase p is sent only once every chunk
    of the phases before it has committed, by the chunk that completes them.
    """
    phases = [_phase(s) for s in specs]
    if not any(phases):
        return candidates
    done = chunks.committed_set(job_id)
    open_phase = min((p for n, p in enumerate(phases) if n not in done), default=0)
    return [n for n in candidates if phases[n] <= open_phase]


def _send_next_phase(
    job_id: int, specs: list[dict[str, Any]], after: int, enqueue: EnqueueFn
) -> None:
    """A chunk of phase ``after`` committed: if it completed its phase, send the next one."""
    for chunk_no in _ready(job_id, specs, chunks.pending(job_id, len(specs))):
        if _phase(specs[chunk_no]) > after:
            enqueue(job_id, chunk_no)


def run_chunk(
    job_id: int,
    chunk_no: int,
    operation: Operation,
    worker: str | None = None,
    enqueue: EnqueueFn | None = None,
) -> ChunkOutcome:
    """Run one chunk exactly once; a duplicate or a chunk of a stopped job does nothing.

    The chunk's lock is held from before its start is counted until after it
    ended, so recovery tells a dead chunk (start counted, lock gone) from a
    slow one. Starts that never ended are counted; a chunk that keeps killing
    its worker fails the job after ``BULKOPS_MAX_ATTEMPTS`` instead of being
    delivered forever.
    """
    max_attempts = get_settings().bulkops_max_attempts
    with chunks.holding(job_id, chunk_no) as conn:
        if conn is None:
            logger.info("chunk is running elsewhere", extra={"job_id": job_id, "chunk": chunk_no})
            return ChunkOutcome(job_id, chunk_no, False, 0, None, ledger.state_of(job_id))
        if chunks.committed(conn, job_id, chunk_no):
            logger.info("chunk already committed", extra={"job_id": job_id, "chunk": chunk_no})
            state = ledger.state_of(job_id)
            if enqueue is not None and state == JobState.RUNNING:
                # its run may have died sending the next phase: send it (again)
                specs = ledger.plan_of(job_id)
                if any(_phase(spec) for spec in specs):
                    _send_next_phase(job_id, specs, _phase(specs[chunk_no]), enqueue)
            return ChunkOutcome(job_id, chunk_no, False, 0, None, state)
        if chunks.start(conn, job_id, chunk_no) > max_attempts:
            ledger.fail(
                job_id,
                f"chunk {chunk_no} was started {max_attempts} times and its worker died each "
                "time (a poison chunk: killed, out of memory or past the hard time limit); "
                "giving up",
            )
            chunks.end(conn, job_id, chunk_no)
            return ChunkOutcome(job_id, chunk_no, False, 0, None, JobState.FAILED.value)
        try:
            outcome = _run_chunk(conn, job_id, chunk_no, operation, worker)
        finally:
            chunks.end(conn, job_id, chunk_no)
    chunks.settle_cancel(job_id)  # after the lock is gone: the last chunk to end settles
    if outcome.ran and outcome.specs is not None and enqueue is not None:
        _send_next_phase(job_id, outcome.specs, _phase(outcome.specs[chunk_no]), enqueue)
    return outcome


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block (a chunk's work), back on after.

    A chunk keeps its 20k rows alive (records, typed tuples, COPY text) until
    it ends and makes no reference cycles worth finding, yet each young
    collection walks all of them: measured on todos, about 30 ms a collection
    and 10% of a chunk's Python even at the raised threshold (worker.app).
    Reference counting frees everything as before; the few cycles a chunk
    makes (a caught exception's traceback) wait for the first collection after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:  # a caller that had it off (or a nested pause) keeps it off
            gc.enable()


def _run_chunk(
    conn: Connection, job_id: int, chunk_no: int, operation: Operation, worker: str | None
) -> ChunkOutcome:
    # A statement blocked in the driver cannot see Celery's soft time limit;
    # PostgreSQL cancels it a little before, and the chunk is retried.
    timeout_ms = int(get_settings().bulkops_task_soft_time_limit * 1000 * STATEMENT_TIMEOUT_SHARE)
    with chunks.transaction(conn, statement_timeout_ms=timeout_ms) as session:
        job = ledger.running_job(session, job_id)
        if job is None or not chunks.insert_committed(session, job_id, chunk_no, worker):
            session.rollback()
            return ChunkOutcome(job_id, chunk_no, False, 0, None, ledger.state_of(job_id))
        spec = chunk_spec(job.params, chunk_no)
        if spec is None:  # not planned yet: the plan sends it
            session.rollback()
            return ChunkOutcome(job_id, chunk_no, False, 0, None, ledger.state_of(job_id))
        started = time.perf_counter()
        with cyclic_gc_paused():
            result = operation.run_chunk(session, job, spec)
        elapsed = time.perf_counter() - started
        c = result.counts
        chunks.record_counts(session, job_id, chunk_no, c, elapsed)
        ledger.add_rejects(session, job_id, chunk_no, result.rejects)
        recorded = ledger.record_chunk(
            session, job_id, c, elapsed if result.batch_s is None else result.batch_s
        )
        if recorded is None:  # the job stopped while this chunk ran: keep nothing of it
            session.rollback()
            return ChunkOutcome(job_id, chunk_no, False, 0, None, ledger.state_of(job_id))
        done, total, state = recorded
    logger.info(
        "chunk committed",
        extra={"job_id": job_id, "chunk": chunk_no, "rows": c.read, "elapsed_s": round(elapsed, 3)},
    )
    specs = job.params.get("chunks", [])
    phased = specs if any(_phase(s) for s in specs) and state == JobState.RUNNING else None
    return ChunkOutcome(job_id, chunk_no, True, done, total, state, phased)
