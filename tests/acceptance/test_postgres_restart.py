"""PostgreSQL restarted in the middle of a job: transient errors retried, data exact.

The test runs its own embedded PostgreSQL (a real server from a wheel, under
tmp_path), never the machine's shared one, and restarts it mid-import.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text

from worker import client, db, migrate
from worker.supervisor import background, worker_command


def test_postgres_restart_mid_import_is_retried_and_exact(
    bulkops_env: dict[str, str],
    private_postgres: tuple[Any, str],
    import_root: Path,
    tmp_path: Path,
    configure: Callable[..., None],
) -> None:
    server, url = private_postgres
    configure(DATABASE_URL=url)
    migrate.upgrade(url)
    env = {**bulkops_env, "DATABASE_URL": url}
    with db.session_scope() as s:
        s.execute(text("INSERT INTO users (email, name) VALUES ('ann@example.com', 'Ann')"))
    with (import_root / "p.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["title", "status", "owner_email"])
        w.writerows([f"todo {i}", "active", "ann@example.com"] for i in range(60_000))
    # Given an import of 60 chunks running on a worker
    job_id = client.submit_import("p.csv")
    with background([worker_command("pg", 2)], env, tmp_path / "logs"):
        deadline = time.monotonic() + 120
        while client.summary(job_id).chunks_done < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        # When PostgreSQL restarts in the middle of it
        db.dispose_engine()
        server.stop()
        time.sleep(2)
        server.ensure_postgres_running()
        # Then the chunks that failed are retried (stale connections replaced by
        # pre-ping), and the job finishes with every row exactly once
        summary = client.wait(job_id, timeout=240)
    assert summary.state == "succeeded", summary.error
    assert (summary.rows_read, summary.rows_inserted) == (60_000, 60_000)
    assert summary.chunks_done == summary.chunks_total == 60
    with db.session_scope() as s:
        assert s.execute(text("SELECT count(*) FROM todos")).scalar_one() == 60_000
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*.log"))
    assert "retrying" in logs or "Retry in" in logs, "the restart should have hit a chunk"
