"""A worker killed with SIGKILL never stalls its job: PostgreSQL tells dead from slow.

Real ``celery -A worker worker`` and ``celery -A worker beat`` subprocesses, with
the default time limits, visibility timeout and stuck period: only the lock-based
liveness (a dead worker's backends end, and their advisory locks with them) can
bring the work back before Redis's one-hour visibility timeout would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

from acceptance_support import (
    JOB_TIMEOUT_S,
    kill_group,
    pool_children,
    seed_emails,
    todo_table,
    write_todos,
)
from sqlalchemy import create_engine, text

from worker import client, db
from worker.config import sqlalchemy_url
from worker.supervisor import background, celery_command, worker_command


def _unfinished_starts() -> int:
    with db.session_scope() as s:
        return int(
            s.execute(
                text("SELECT coalesce(sum(unfinished), 0) FROM bulkops_ledger.job_chunk_starts")
            ).scalar_one()
        )


def _attempts(job_id: int) -> int:
    with db.session_scope() as s:
        return int(
            s.execute(
                text("SELECT attempts FROM bulkops_ledger.jobs WHERE id = :id"), {"id": job_id}
            ).scalar_one()
        )


def _until(predicate: object, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout  # a hang guard, not a timing assertion
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_whole_worker_killed_mid_chunk_its_chunks_run_again_without_waiting_for_redis(
    bulkops_env: dict[str, str], import_root: Path, tmp_path: Path
) -> None:
    # Given an import of 6 chunks, and a worker (2 processes) whose two chunks are
    # in flight (they wait on a lock the test holds on the todos table)
    expected = write_todos(import_root / "six.csv", 6000, seed_emails(60))
    locker = create_engine(sqlalchemy_url(bulkops_env["DATABASE_URL"])).connect()
    trans = locker.begin()
    locker.execute(text("LOCK TABLE todos IN ACCESS EXCLUSIVE MODE"))
    try:
        job_id = client.submit_import("six.csv")
        name = f"killed-{uuid.uuid4().hex[:6]}"
        with background([worker_command(name, 2)], bulkops_env, tmp_path / "a") as procs:
            _until(lambda: _unfinished_starts() == 2, "two chunks in flight")
            # When the whole worker is killed (as the OOM killer or a lost node does)
            kill_group(procs[0])
    finally:
        trans.rollback()
        locker.close()
    # Then, with beat's recovery and a new worker (default settings: a one-hour
    # visibility timeout, a 300 s stuck period), the dead chunks run again and the
    # job finishes exactly as an undisturbed run
    beat = celery_command("beat", "--loglevel=INFO", "-s", str(tmp_path / "beat-schedule"))
    with background([worker_command(f"{name}-b", 2), beat], bulkops_env, tmp_path / "b"):
        summary = client.wait(job_id, timeout=JOB_TIMEOUT_S)
    assert summary.state == "succeeded", summary.error
    assert (summary.rows_read, summary.rows_inserted, summary.rows_rejected) == (6000, 6000, 0)
    assert summary.chunks_done == summary.chunks_total == 6
    assert todo_table() == expected
    with db.session_scope() as s:
        assert s.execute(text("SELECT count(*) FROM todos")).scalar_one() == 6000
        # the two killed starts stay counted (a poison chunk would be bounded)
        assert (
            s.execute(
                text("SELECT sum(unfinished) FROM bulkops_ledger.job_chunk_starts")
            ).scalar_one()
            == 2
        )


def test_job_that_kills_its_worker_while_planning_fails_after_max_attempts(
    bulkops_env: dict[str, str], tmp_path: Path
) -> None:
    # Given a status update whose plan waits on a lock the test holds on todos,
    # and a test that SIGKILLs the pool process planning it, as the OOM killer would
    env = {**bulkops_env, "BULKOPS_MAX_ATTEMPTS": "3"}
    seed_emails(1)
    locker = create_engine(sqlalchemy_url(bulkops_env["DATABASE_URL"])).connect()
    trans = locker.begin()
    locker.execute(text("LOCK TABLE todos IN ACCESS EXCLUSIVE MODE"))
    kills = 0
    try:
        job_id = client.submit_update_status("completed", ["active"])
        name = f"planner-{uuid.uuid4().hex[:6]}"
        with background([worker_command(name, 1)], env, tmp_path / "w") as procs:
            deadline = time.monotonic() + JOB_TIMEOUT_S  # a hang guard
            # When every claim's planner is killed while it plans
            while not client.summary(job_id).finished and time.monotonic() < deadline:
                if _attempts(job_id) > kills:
                    time.sleep(0.5)  # let it reach the locked table
                    for pid in pool_children(procs[0].pid):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    kills += 1
                time.sleep(0.2)
            summary = client.summary(job_id)
    finally:
        trans.rollback()
        locker.close()
    # Then each death counted an attempt and the job ended failed, saying why
    assert summary.state == "failed", summary
    assert summary.error is not None and "planned 3 times" in summary.error
    assert kills == 3
    assert summary.chunks_total is None and summary.rows_read == 0
