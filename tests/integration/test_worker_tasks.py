"""The maintenance tasks through a real Celery worker, on the maintenance queue."""

from __future__ import annotations

from typing import Any

from jobs_support import backdate
from sqlalchemy import text

from worker import client, ledger
from worker.app import producer_app
from worker.db import session_scope
from worker.queues import MAINTENANCE


def test_health_task_reports_healthy_and_records_a_row(worker: Any) -> None:
    # When beat's health task runs on the maintenance queue
    result = producer_app().send_task("tasks.health.run_health_check", queue=MAINTENANCE)
    report = result.get(timeout=60)
    # Then the JSON report says healthy, check by check
    assert report["healthy"] is True, report
    assert [c["name"] for c in report["checks"]] == ["database", "pool", "redis", "queues", "jobs"]
    assert all(c["ok"] for c in report["checks"])
    # and the run is recorded in the ledger's health_checks table
    with session_scope() as s:
        rows = s.execute(text("SELECT healthy, details FROM bulkops_ledger.health_checks")).all()
    assert len(rows) == 1
    assert rows[0].healthy is True
    assert rows[0].details == report


def test_recovery_task_resends_a_job_whose_message_was_lost(worker: Any) -> None:
    # Given a seed job whose message never reached Redis, queued for an hour
    job_id = ledger.submit("seed", {"users": 4, "todos_per_user": 3, "random_seed": 5}, _lost)
    backdate(job_id, 3600, "created_at", "updated_at")
    # When beat's recovery task runs
    outcome = producer_app().send_task("tasks.maintenance.recover_stuck_jobs", queue=MAINTENANCE)
    assert outcome.get(timeout=60) == {
        "resent": [job_id],
        "failed": [],
        "chunks": [],
        "cancelled": [],
        "restored": [],  # nothing a dead worker held: the message never reached Redis
        "pruned": 0,
    }
    # Then the job is picked up and done, exactly once
    summary = client.wait(job_id, timeout=120)
    assert summary.state == "succeeded", summary.error
    assert (summary.rows_read, summary.rows_inserted, summary.rows_skipped) == (16, 16, 0)
    with session_scope() as s:
        counts = s.execute(
            text("SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM todos)")
        ).one()
    assert tuple(counts) == (4, 12)


def _lost(job_id: int, task_id: str) -> None:
    """A send that never reaches the broker (Redis restarted without persistence)."""
