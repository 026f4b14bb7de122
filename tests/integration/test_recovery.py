"""Recovery from the ledger, with recording ``send`` functions (no Celery).

Liveness is PostgreSQL's: a planner or chunk that holds its advisory lock is
alive however old its timestamps; one that does not (its backend ended) is dead
and is sent again at once. Jobs whose messages were lost are sent again after
the stuck period.
"""

from __future__ import annotations

from typing import Any

import pytest
from jobs_support import backdate, no_send
from sqlalchemy import text

from worker import chunks, ledger
from worker.db import session_scope
from worker.models import Job
from worker.recovery import recover_stuck_jobs

pytestmark = pytest.mark.usefixtures("bulkops_env")

STUCK_AFTER_S = 300
MAX_ATTEMPTS = 3


class Sends:
    """A recording ``send(kind, job_id, task_id)`` / ``send_chunk(kind, job_id, chunk_no)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, Any]] = []

    def __call__(self, kind: str, job_id: int, other: Any) -> None:
        self.calls.append((kind, job_id, other))


def job_row(job_id: int) -> Job:
    with session_scope() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def queued_job(age_s: int = 0) -> int:
    job_id = ledger.submit("seed", {"users": 1}, no_send)
    if age_s:
        backdate(job_id, age_s, "created_at", "updated_at")
    return job_id


def dead_planner(attempts: int = 1) -> int:
    """A job claimed ``attempts`` times by planners that died (no lock held)."""
    job_id = ledger.submit("seed", {"users": 1}, no_send)
    for _ in range(attempts):
        assert ledger.claim(job_id, MAX_ATTEMPTS) is not None
    assert job_row(job_id).attempts == attempts
    return job_id


def planned_job(chunks_total: int = 2) -> int:
    """A running job whose plan (``chunks_total`` chunks) was sent."""
    job_id = ledger.submit("seed", {"users": 1}, no_send)
    with chunks.holding(job_id, chunks.PLANNER) as conn:
        assert conn is not None
        assert ledger.claim(job_id, MAX_ATTEMPTS) is not None
        with session_scope() as s:
            assert ledger.store_plan(s, job_id, [{"n": n} for n in range(chunks_total)])
        ledger.set_planned(job_id, chunks_total)
    return job_id


def chunk_started(job_id: int, chunk_no: int) -> None:
    """Count a start of the chunk, as a worker that then dies leaves it."""
    with chunks.holding(job_id, chunk_no) as conn:
        assert conn is not None
        chunks.start(conn, job_id, chunk_no)


def recover(send: Any, send_chunk: Any = None) -> Any:
    return recover_stuck_jobs(STUCK_AFTER_S, MAX_ATTEMPTS, send, send_chunk)


def test_queued_job_whose_message_was_lost_is_resent_once_per_period() -> None:
    # Given a job queued an hour ago and never claimed (Redis lost its message)
    job_id = queued_job(age_s=3600)
    task_id = job_row(job_id).celery_task_id
    sends = Sends()
    # When recovery runs
    report = recover(sends)
    # Then it is re-sent with its own kind and task id, and stays queued
    assert sends.calls == [("seed", job_id, task_id)]
    assert (report.resent, report.failed) == ([job_id], [])
    assert job_row(job_id).state == "queued"
    # When recovery runs again at once, it is not sent a second time
    assert recover(sends).resent == []
    # Given another period passed without a claim, it is sent again
    backdate(job_id, STUCK_AFTER_S + 60, "updated_at", "resent_at")
    assert recover(sends).resent == [job_id]
    assert len(sends.calls) == 2


def test_job_whose_planner_died_is_resent_at_once_and_once_per_claim() -> None:
    # Given a job whose planner died just now (claimed, its lock gone)
    job_id = dead_planner(attempts=1)
    sends = Sends()
    # When recovery runs, without waiting for any stuck period
    assert recover(sends).resent == [job_id]
    assert recover(sends).resent == []  # not again while that message is on its way
    # When the next planner claims it and dies too, it is sent again at once
    assert ledger.claim(job_id, MAX_ATTEMPTS) is not None
    with session_scope() as s:  # its claim is later than the re-send
        s.execute(
            text(
                "UPDATE bulkops_ledger.jobs SET resent_at = now() - interval '1 minute' "
                "WHERE id = :id"
            ),
            {"id": job_id},
        )
    assert recover(sends).resent == [job_id]
    job = job_row(job_id)
    assert (job.state, job.attempts, job.error) == ("running", 2, None)


def test_job_whose_planner_died_max_attempts_times_is_failed_not_resent() -> None:
    job_id = dead_planner(attempts=MAX_ATTEMPTS)
    sends = Sends()
    report = recover(sends)
    # Then it ends failed with a reason, and nothing is sent
    assert (report.resent, report.failed, sends.calls) == ([], [job_id], [])
    job = job_row(job_id)
    assert job.state == "failed" and job.finished_at is not None
    assert job.error is not None and "planned 3 times" in job.error


def test_a_live_planner_is_never_resent_however_long_it_plans() -> None:
    job_id = ledger.submit("seed", {"users": 1}, no_send)
    with chunks.holding(job_id, chunks.PLANNER) as conn:
        assert conn is not None
        assert ledger.claim(job_id, MAX_ATTEMPTS) is not None
        # Given its heartbeat and claim are a day old, at max attempts
        backdate(job_id, 86400, "heartbeat_at", "updated_at", "started_at")
        with session_scope() as s:
            s.execute(
                text("UPDATE bulkops_ledger.jobs SET attempts = :n WHERE id = :id"),
                {"id": job_id, "n": 3},
            )
        sends = Sends()
        report = recover(sends, sends)
    # Then recovery leaves it alone
    assert (report.resent, report.failed, report.chunks, sends.calls) == ([], [], [], [])
    assert job_row(job_id).state == "running"


def test_dead_chunk_is_resent_at_once_and_a_live_slow_one_never() -> None:
    job_id = planned_job(chunks_total=3)
    # Given chunk 0's worker died in it (start counted, lock gone), and chunk 1
    # runs, slowly, holding its lock, started a day ago
    chunk_started(job_id, 0)
    with chunks.holding(job_id, 1) as live:
        assert live is not None
        chunks.start(live, job_id, 1)
        with session_scope() as s:
            s.execute(
                text(
                    "UPDATE bulkops_ledger.job_chunk_starts "
                    "SET started_at = now() - interval '1 day'"
                )
            )
        sends, chunk_sends = Sends(), Sends()
        # When recovery runs
        report = recover(sends, chunk_sends)
        # Then only the dead chunk is sent again, at once, and only once
        assert report.chunks == [(job_id, 0)]
        assert chunk_sends.calls == [("seed", job_id, 0)]
        assert sends.calls == []
        assert recover(sends, chunk_sends).chunks == []
        chunks.end(live, job_id, 1)  # the slow chunk ends, alive
    # When the re-sent chunk starts and dies again, it is sent again
    chunk_started(job_id, 0)
    assert recover(sends, chunk_sends).chunks == [(job_id, 0)]


def test_committed_chunk_is_not_dead() -> None:
    job_id = planned_job(chunks_total=1)
    chunk_started(job_id, 0)
    with session_scope() as s:
        assert chunks.insert_committed(s, job_id, 0, "w")
    chunk_sends = Sends()
    assert recover(Sends(), chunk_sends).chunks == []
    assert chunk_sends.calls == []


def test_planned_job_with_nothing_in_flight_and_no_progress_is_resent() -> None:
    # Given a planned job whose chunk messages were lost an hour ago
    job_id = planned_job()
    backdate(job_id, 3600, "heartbeat_at", "updated_at")
    sends = Sends()
    assert recover(sends).resent == [job_id]
    assert job_row(job_id).state == "running"
    assert ledger.resume_requested(job_row(job_id))


def test_planned_job_with_a_chunk_in_flight_is_not_stuck() -> None:
    job_id = planned_job()
    backdate(job_id, 3600, "heartbeat_at", "updated_at")
    with chunks.holding(job_id, 0) as conn:
        assert conn is not None
        sends = Sends()
        assert recover(sends).resent == []
    assert sends.calls == []


def test_cancelling_job_with_nothing_in_flight_is_cancelled() -> None:
    job_id = planned_job()
    with chunks.holding(job_id, 0) as conn:
        assert conn is not None
        assert ledger.cancel(job_id) == "cancelling"
        assert recover(Sends()).cancelled == []
    # Given the chunk's worker died before settling the cancel
    with session_scope() as s:
        s.execute(
            text("UPDATE bulkops_ledger.jobs SET state = 'cancelling' WHERE id = :id"),
            {"id": job_id},
        )
    report = recover(Sends())
    assert report.cancelled == [job_id]
    assert job_row(job_id).state == "cancelled"


def test_fresh_and_finished_jobs_are_untouched() -> None:
    fresh_queued = queued_job()
    finished = queued_job(age_s=3600)
    ledger.cancel(finished)
    backdate(finished, 3600, "updated_at")
    fresh_planned = planned_job()
    before = {j: job_row(j) for j in (fresh_queued, finished, fresh_planned)}
    sends = Sends()
    report = recover(sends, sends)
    assert (report.resent, report.failed, report.chunks, sends.calls) == ([], [], [], [])
    for job_id, old in before.items():
        new = job_row(job_id)
        assert (new.state, new.attempts, new.updated_at) == (
            old.state,
            old.attempts,
            old.updated_at,
        )


def test_a_failing_send_is_reported_not_raised() -> None:
    stuck_a, stuck_b = queued_job(age_s=3600), queued_job(age_s=3600)
    sent: list[int] = []

    def flaky(kind: str, job_id: int, task_id: str) -> None:
        if job_id == stuck_a:
            raise ConnectionError("Redis went away")
        sent.append(job_id)

    report = recover(flaky)
    assert (report.resent, report.failed) == ([stuck_b], [])
    assert sent == [stuck_b]
    assert job_row(stuck_a).state == "queued"


def _dups(job_id: int) -> int:
    with session_scope() as s:
        return int(
            s.execute(
                text("SELECT count(*) FROM bulkops_ledger.job_key_dups WHERE job_id = :id"),
                {"id": job_id},
            ).scalar_one()
        )


def _add_dups(job_id: int) -> None:
    with session_scope() as s:
        s.execute(
            text(
                "INSERT INTO bulkops_ledger.job_key_dups "
                '(job_id, line, chunk_no, digest, start, "end") '
                "VALUES (:id, 2, 0, 7, 10, 20), (:id, 9, 1, 7, 90, 100)"
            ),
            {"id": job_id},
        )


def test_repeated_keys_of_finished_jobs_are_pruned_and_a_running_jobs_kept() -> None:
    # Given the plans' repeated keys of a running job and of a finished one
    running, finished = planned_job(), planned_job()
    for job_id in (running, finished):
        _add_dups(job_id)
    ledger.fail(finished, "stopped")
    # When recovery runs
    report = recover(Sends())
    # Then the finished job's rows are gone, the running job's (its chunks read them) kept
    assert report.pruned == 2
    assert (_dups(running), _dups(finished)) == (2, 0)
    assert recover(Sends()).pruned == 0
