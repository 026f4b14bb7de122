"""Recovery of stuck jobs from the ledger, with a recording ``send`` (no Celery)."""

from __future__ import annotations

from typing import Any

import pytest
from jobs_support import backdate
from sqlalchemy import text

from worker import ledger
from worker.db import session_scope
from worker.models import Job
from worker.recovery import recover_stuck_jobs

pytestmark = pytest.mark.usefixtures("bulkops_env")

STUCK_AFTER_S = 300
MAX_ATTEMPTS = 3


class Sends:
    """A recording ``send(kind, job_id, task_id)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str]] = []

    def __call__(self, kind: str, job_id: int, task_id: str) -> None:
        self.calls.append((kind, job_id, task_id))


def no_send(job_id: int, task_id: str) -> None:
    return None


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


def running_job(attempts: int = 1, heartbeat_age_s: int = 0) -> int:
    job_id = ledger.submit("seed", {"users": 1}, no_send)
    with session_scope() as s:
        for _ in range(attempts):
            # each earlier claim's worker died: its heartbeat is long stale
            s.execute(
                text("UPDATE jobs SET heartbeat_at = now() - interval '1 day' WHERE id = :id"),
                {"id": job_id},
            )
            assert ledger.claim(s, job_id, STUCK_AFTER_S) is not None
    if heartbeat_age_s:
        backdate(job_id, heartbeat_age_s, "heartbeat_at", "updated_at")
    assert job_row(job_id).attempts == attempts
    return job_id


def recover(send: Any) -> Any:
    return recover_stuck_jobs(STUCK_AFTER_S, MAX_ATTEMPTS, send)


def test_queued_job_whose_message_was_lost_is_resent_once() -> None:
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
    again = recover(sends)
    assert (again.resent, again.failed) == ([], [])
    assert len(sends.calls) == 1


def test_queued_job_is_resent_again_after_another_period() -> None:
    job_id = queued_job(age_s=3600)
    sends = Sends()
    recover(sends)
    # Given another period passed without a claim
    backdate(job_id, STUCK_AFTER_S + 60, "updated_at")
    assert recover(sends).resent == [job_id]
    assert [c[1] for c in sends.calls] == [job_id, job_id]


def test_running_job_with_stale_heartbeat_under_max_attempts_is_resent() -> None:
    # Given a job claimed twice whose worker stopped beating an hour ago
    job_id = running_job(attempts=MAX_ATTEMPTS - 1, heartbeat_age_s=3600)
    sends = Sends()
    report = recover(sends)
    assert (report.resent, report.failed) == ([job_id], [])
    assert [c[:2] for c in sends.calls] == [("seed", job_id)]
    job = job_row(job_id)
    assert (job.state, job.attempts, job.error) == ("running", MAX_ATTEMPTS - 1, None)
    # and not again immediately
    assert recover(sends).resent == []
    assert len(sends.calls) == 1


def test_running_job_at_max_attempts_is_failed_not_resent() -> None:
    # Given a poison job: claimed max-attempts times, its worker died each time
    job_id = running_job(attempts=MAX_ATTEMPTS, heartbeat_age_s=3600)
    sends = Sends()
    report = recover(sends)
    # Then it ends failed with a reason, and nothing is sent
    assert (report.resent, report.failed) == ([], [job_id])
    assert sends.calls == []
    job = job_row(job_id)
    assert job.state == "failed"
    assert job.error == "worker lost 3 times; giving up (max attempts 3)"
    assert job.finished_at is not None


def test_fresh_jobs_are_untouched() -> None:
    # Given a fresh queued job, and running jobs with a live heartbeat
    fresh_queued = queued_job()
    fresh_running = running_job(attempts=1)
    busy_at_max = running_job(attempts=MAX_ATTEMPTS)  # many attempts, but alive
    before = {j: job_row(j) for j in (fresh_queued, fresh_running, busy_at_max)}
    sends = Sends()
    report = recover(sends)
    assert (report.resent, report.failed, sends.calls) == ([], [], [])
    for job_id, old in before.items():
        new = job_row(job_id)
        assert (new.state, new.attempts, new.updated_at, new.error) == (
            old.state,
            old.attempts,
            old.updated_at,
            None,
        )


def test_finished_jobs_are_never_resent() -> None:
    job_id = queued_job(age_s=3600)
    ledger.cancel(job_id)
    backdate(job_id, 3600, "updated_at")
    sends = Sends()
    assert recover(sends).resent == []
    assert sends.calls == []
    assert job_row(job_id).state == "cancelled"


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
