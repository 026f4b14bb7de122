"""Redis restarted without persistence: queued messages are lost, the ledger recovers them.

Each test starts its own ``redis-server`` on a free port (never the machine's
shared one), a real worker and a real beat on it, and restarts that Redis.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import redis
from acceptance_support import PrivateRedis
from sqlalchemy import text

from worker import client, db
from worker.supervisor import background, celery_command, worker_command


def _users_and_file(path: Path, rows: int) -> None:
    with db.session_scope() as s:
        s.execute(text("INSERT INTO users (email, name) VALUES ('ann@example.com', 'Ann')"))
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["title", "status", "owner_email"])
        for i in range(rows):
            w.writerow([f"todo {i}", "active", "ann@example.com"])


def _count() -> int:
    with db.session_scope() as s:
        return int(s.execute(text("SELECT count(*) FROM todos")).scalar_one())


def test_redis_restart_while_jobs_are_queued(
    env_on_private_redis: dict[str, str],
    private_redis: PrivateRedis,
    import_root: Path,
    tmp_path: Path,
) -> None:
    # Given a job queued while no worker runs
    _users_and_file(import_root / "q.csv", 3_000)
    job_id = client.submit_import("q.csv")
    assert redis.Redis.from_url(private_redis.url).llen("imports") == 1
    # When Redis restarts without persistence, the message is gone
    private_redis.restart()
    assert redis.Redis.from_url(private_redis.url).llen("imports") == 0
    # Then beat's recovery re-sends it from the ledger and the worker finishes it
    beat = celery_command("beat", "--loglevel=INFO", "-s", str(tmp_path / "beat-schedule"))
    with background([worker_command("rq", 1), beat], env_on_private_redis, tmp_path / "logs"):
        summary = client.wait(job_id, timeout=120)
    assert summary.state == "succeeded", summary.error
    assert summary.rows_inserted == 3_000 == _count()


def test_redis_restart_in_the_middle_of_a_job(
    env_on_private_redis: dict[str, str],
    private_redis: PrivateRedis,
    import_root: Path,
    tmp_path: Path,
) -> None:
    # Given an import of 60 chunks running on one worker, with beat
    _users_and_file(import_root / "m.csv", 60_000)
    job_id = client.submit_import("m.csv")
    beat = celery_command("beat", "--loglevel=INFO", "-s", str(tmp_path / "beat-schedule"))
    with background([worker_command("rm", 1), beat], env_on_private_redis, tmp_path / "logs"):
        deadline = time.monotonic() + 120
        while client.summary(job_id).chunks_done < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        # When Redis restarts without persistence mid-job (queued chunks are lost)
        private_redis.restart()
        lost_at = client.summary(job_id).chunks_done
        assert lost_at < 60, "the restart must land mid-job"
        # Then the job still finishes exactly: recovery re-sends the missing chunks
        summary = client.wait(job_id, timeout=180)
    assert summary.state == "succeeded", summary.error
    assert (summary.rows_read, summary.rows_inserted) == (60_000, 60_000)
    assert summary.chunks_done == summary.chunks_total == 60
    assert _count() == 60_000
