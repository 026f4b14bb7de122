"""tasks.jobs.submit through a real worker: send_task and ``celery -A worker call``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from import_support import Counts, counts, seed_users, todos, write
from sqlalchemy import text

from worker import client, db
from worker.app import producer_app
from worker.queues import MAINTENANCE

CSV = (
    "title,status,owner_email\n"
    "Buy milk,active,ann@example.com\n"
    "Fix bike,completed,ann@example.com\n"
    "Call mom,active,nobody@example.com\n"
)


def _send(kind: Any, params: Any, key: str | None = None) -> dict[str, Any]:
    """What another application does: the task by name, JSON kwargs, the maintenance queue."""
    result = producer_app().send_task(
        "tasks.jobs.submit", kwargs={"kind": kind, "params": params, "key": key}, queue=MAINTENANCE
    )
    reply: dict[str, Any] = result.get(timeout=60)
    return reply


def _jobs_with_key(key: str) -> list[int]:
    with db.session_scope() as s:
        rows = s.execute(
            text("SELECT id FROM bulkops_ledger.jobs WHERE idempotency_key = :k"), {"k": key}
        )
        return [int(r.id) for r in rows]


def test_send_task_runs_an_import_and_the_same_key_gives_one_job(
    worker: Any, import_root: Path
) -> None:
    # Given a file under the import root and its owner
    seed_users("ann@example.com")
    write(import_root, "todos.csv", CSV)
    # When a foreign client sends the submit task twice with one key
    first = _send("import", {"path": "todos.csv"}, key="k1")
    second = _send("import", {"path": "todos.csv"}, key="k1")
    # Then both name the same job, which ran once with the exact result
    assert first["job_id"] == second["job_id"]
    assert _jobs_with_key("k1") == [first["job_id"]]
    summary = client.wait(first["job_id"], timeout=120)
    assert counts(summary) == Counts("partially_succeeded", read=3, inserted=2, rejected=1)
    assert todos() == [
        ("Buy milk", "active", "ann@example.com"),
        ("Fix bike", "completed", "ann@example.com"),
    ]
    assert [r.reason for r in client.rejects(first["job_id"])] == [
        "unknown owner 'nobody@example.com'"
    ]


@pytest.mark.parametrize(
    ("kind", "params", "error"),
    [
        ("import", {"path": "todos.csv", "table": "projects"}, "unknown table 'projects'"),
        ("import", {"path": "/etc/passwd"}, "outside the import root"),
        ("import", {"path": "missing.csv"}, "no such file under the import root"),
        ("import", {"file": "todos.csv"}, "unknown parameter(s) file"),
        ("import", {}, "missing 1 required positional argument: 'path'"),
        ("update_status", {"to_status": "gone"}, "unknown status 'gone'"),
        ("seed", {"users": -1}, "users"),
        ("reindex", {}, "unknown job kind 'reindex'"),
        ("seed", ["not", "an", "object"], "params must be a JSON object"),
    ],
)
def test_bad_parameters_give_a_failed_job_that_says_why(
    worker: Any, import_root: Path, kind: Any, params: Any, error: str
) -> None:
    # Given a file the good requests could read
    write(import_root, "todos.csv", CSV)
    # When a client sends a request the submit function would refuse
    reply = _send(kind, params, key=f"bad-{kind}")
    # Then a failed job row holds the reason, and sending it again adds no job
    summary = client.summary(reply["job_id"])
    assert (reply["state"], summary.state) == ("failed", "failed")
    assert summary.error is not None and error in summary.error, summary.error
    assert _send(kind, params, key=f"bad-{kind}")["job_id"] == reply["job_id"]
    assert _jobs_with_key(f"bad-{kind}") == [reply["job_id"]]


def test_celery_call_subprocess_runs_a_job_once(
    worker: Any, bulkops_env: dict[str, str], import_root: Path, tmp_path: Path
) -> None:
    # Given a file under the import root
    seed_users("ann@example.com")
    write(import_root, "todos.csv", CSV)
    kwargs = json.dumps({"kind": "import", "params": {"path": "todos.csv"}, "key": "call-1"})
    # When an operator runs `celery -A worker call` twice, from another directory
    for _ in range(2):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "call",
                "tasks.jobs.submit",
                "--kwargs",
                kwargs,
            ],
            env={**bulkops_env, "PYTHONPATH": str(Path(__file__).parents[2])},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    # Then one job exists for the key, and it imports the file
    job_id = _wait_for_job("call-1")
    summary = client.wait(job_id, timeout=120)
    assert counts(summary) == Counts("partially_succeeded", read=3, inserted=2, rejected=1)
    # the second call found the first job: still one row for the key, and no rows doubled
    assert _jobs_with_key("call-1") == [job_id]
    assert len(todos()) == 2


def _wait_for_job(key: str) -> int:
    """The job a fire-and-forget `celery call` made (the call returns before the task runs)."""
    for _ in range(600):
        ids = _jobs_with_key(key)
        if ids:
            return ids[0]
        time.sleep(0.1)
    raise AssertionError(f"no job with key {key!r} was written")
