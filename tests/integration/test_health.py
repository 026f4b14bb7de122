"""Health checks against real PostgreSQL and Redis (and a Redis that is not there)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
from jobs_support import backdate, no_send
from sqlalchemy import text

from worker import health, ledger
from worker.config import get_settings
from worker.db import session_scope

pytestmark = pytest.mark.usefixtures("bulkops_env")

CHECKS = ["database", "pool", "redis", "queues", "jobs"]


def by_name(report: health.HealthReport) -> dict[str, health.Check]:
    return {c.name: c for c in report.checks}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def health_rows() -> list[Any]:
    with session_scope() as s:
        return list(
            s.execute(
                text(
                    "SELECT healthy, details, checked_at FROM bulkops_ledger.health_checks "
                    "ORDER BY id"
                )
            )
        )


def test_everything_up_is_healthy() -> None:
    report = health.run_checks()
    checks = by_name(report)
    assert [c.name for c in report.checks] == CHECKS
    assert report.healthy is True, report.to_dict()
    assert all(c.ok for c in report.checks)
    assert checks["database"].data["version"].split(".")[0].isdigit()
    assert set(checks["pool"].data) == {"size", "checked_out", "overflow", "checked_in"}
    assert set(checks["queues"].data["depth"]) == {"imports", "updates", "maintenance"}
    assert checks["jobs"].data == {"by_state": {}, "stuck_queued": 0, "stuck_running": 0}


def test_fresh_jobs_are_counted_but_not_stuck() -> None:
    ledger.submit("seed", {}, no_send)
    ledger.submit("seed", {}, no_send)
    jobs = by_name(health.run_checks())["jobs"]
    assert jobs.ok is True
    assert jobs.data == {"by_state": {"queued": 2}, "stuck_queued": 0, "stuck_running": 0}


def test_record_writes_a_row() -> None:
    report = health.run_checks()
    health.record(report, retention_days=7)
    rows = health_rows()
    assert len(rows) == 1
    healthy, details, checked_at = rows[0]
    assert healthy is True
    assert details == report.to_dict()
    assert checked_at.tzinfo is not None


def test_record_prunes_rows_older_than_the_retention() -> None:
    # Given rows from 10 days, 6 days and 1 hour ago
    with session_scope() as s:
        for age in ("10 days", "6 days", "1 hour"):
            s.execute(
                text(
                    "INSERT INTO bulkops_ledger.health_checks (healthy, checked_at) "
                    "VALUES (true, now() - CAST(:age AS interval))"
                ),
                {"age": age},
            )
    # When a check is recorded with a 7-day retention
    health.record(health.HealthReport(False, []), retention_days=7)
    # Then only the 10-day-old row is gone, and the new one is there
    with session_scope() as s:
        ages = [
            r[0]
            for r in s.execute(
                text(
                    "SELECT extract(day FROM now() - checked_at) FROM "
                    "bulkops_ledger.health_checks ORDER BY id"
                )
            )
        ]
        newest = s.execute(
            text("SELECT healthy FROM bulkops_ledger.health_checks ORDER BY id DESC LIMIT 1")
        ).scalar_one()
    assert [int(a) for a in ages] == [6, 0, 0]
    assert newest is False


def test_unreachable_redis_makes_the_report_unhealthy_and_says_why(
    configure: Callable[..., None],
) -> None:
    # Given REDIS_URL points at a port where nothing listens
    port = closed_port()
    configure(CELERY_BROKER_URL=None, REDIS_URL=f"redis://127.0.0.1:{port}/0")
    # When the checks run, they report rather than raise
    report = health.run_checks()
    checks = by_name(report)
    # Then the report is unhealthy, the redis check names the cause,
    assert report.healthy is False
    assert checks["redis"].ok is False
    assert "ConnectionError" in checks["redis"].detail
    assert str(port) in checks["redis"].detail
    assert (checks["queues"].ok, checks["queues"].detail) == (False, "redis unreachable")
    # and the database side is still checked and fine
    assert checks["database"].ok and checks["pool"].ok and checks["jobs"].ok


def test_unreachable_database_is_a_failed_check(configure: Callable[..., None]) -> None:
    port = closed_port()
    configure(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{port}/nothing")
    report = health.run_checks()
    checks = by_name(report)
    assert report.healthy is False
    assert checks["database"].ok is False
    assert str(port) in checks["database"].detail
    assert (checks["jobs"].ok, checks["jobs"].detail) == (False, "database unreachable")
    assert checks["redis"].ok is True


def test_job_stuck_queued_is_not_ok() -> None:
    # Given a job queued an hour ago that no worker ever claimed
    stuck = ledger.submit("seed", {}, no_send)
    ledger.submit("seed", {}, no_send)  # and a fresh one
    backdate(stuck, 3600, "created_at", "updated_at")
    report = health.run_checks()
    jobs = by_name(report)["jobs"]
    assert report.healthy is False
    assert jobs.ok is False
    assert jobs.data == {"by_state": {"queued": 2}, "stuck_queued": 1, "stuck_running": 0}
    assert jobs.detail == "1 stuck queued, 0 stuck running"


def test_job_whose_planner_died_is_not_ok() -> None:
    # Given a job claimed for planning whose planner holds no lock (it died)
    job_id = ledger.submit("seed", {}, no_send)
    assert ledger.claim(job_id, 3) is not None
    jobs = by_name(health.run_checks())["jobs"]
    assert jobs.ok is False
    assert (jobs.data["stuck_queued"], jobs.data["stuck_running"]) == (0, 1)


def test_job_with_a_live_planner_is_ok_however_old_its_heartbeat() -> None:
    from worker import chunks

    # Given a planner that holds its lock, with a heartbeat an hour old
    job_id = ledger.submit("seed", {}, no_send)
    with chunks.holding(job_id, chunks.PLANNER) as conn:
        assert conn is not None
        assert ledger.claim(job_id, 3) is not None
        backdate(job_id, 3600, "heartbeat_at", "updated_at")
        jobs = by_name(health.run_checks())["jobs"]
    # Then it is alive, not stuck
    assert jobs.ok is True, jobs
    assert (jobs.data["stuck_queued"], jobs.data["stuck_running"]) == (0, 0)


def test_exhausted_pool_is_not_ok() -> None:
    from worker.db import build_engine

    # Given a pool of one connection, no overflow, and that connection in use
    engine = build_engine(get_settings(), pool_size=1, max_overflow=0)
    try:
        assert health.check_pool(engine).ok is True
        with engine.connect():
            pool = health.check_pool(engine)
        # Then the pool check says so
        assert pool.ok is False
        assert pool.detail == "1 of 1 connections checked out (pool exhausted)"
        assert pool.data["checked_out"] == 1
    finally:
        engine.dispose()
