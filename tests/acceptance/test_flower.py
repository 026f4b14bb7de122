"""Operators: a real Flower process (with basic auth) sees the job's tasks and PROGRESS."""

from __future__ import annotations

import base64
import contextlib
import json
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import create_engine, text

from worker import client, db
from worker.config import sqlalchemy_url
from worker.embedded import free_port
from worker.supervisor import background, celery_command, worker_command

AUTH = "operator:s3cret-pw"
DB_PASSWORD = "pg-pass-77f1"


def _get(url: str, auth: str | None = AUTH) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def _poll(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            found = predicate()
            if found:
                return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _chunk_task(tasks: dict[str, Any], job_id: int, state: str) -> dict[str, Any] | None:
    for task in tasks.values():
        if (
            task.get("name") == "tasks.imports.import_chunk"
            and task.get("args") == f"[{job_id}, 0]"
            and task.get("state") == state
        ):
            return task  # type: ignore[no-any-return]
    return None


def test_flower_sees_named_tasks_with_job_and_chunk_args_and_progress(
    bulkops_env: dict[str, str], import_root: Path, tmp_path: Path
) -> None:
    # Given a worker, Flower behind basic auth, and a chunk that will wait on a lock
    with db.session_scope() as s:
        s.execute(text("INSERT INTO users (email, name) VALUES ('ann@example.com', 'Ann')"))
    (import_root / "t.csv").write_text("title,status,owner_email\nA,active,ann@example.com\n")
    port = free_port()
    # The database password (trust auth here ignores it) must never surface.
    url = urlsplit(bulkops_env["DATABASE_URL"])
    with_password = urlunsplit(
        url._replace(netloc=f"postgres:{DB_PASSWORD}@{url.hostname}:{url.port}")
    )
    env = {**bulkops_env, "FLOWER_BASIC_AUTH": AUTH, "DATABASE_URL": with_password}
    flower = celery_command("flower", f"--port={port}", "--address=127.0.0.1")
    base = f"http://127.0.0.1:{port}"
    locker = create_engine(sqlalchemy_url(bulkops_env["DATABASE_URL"])).connect()
    trans = locker.begin()
    locker.execute(text("LOCK TABLE todos IN ACCESS EXCLUSIVE MODE"))
    name = f"flower-{uuid.uuid4().hex[:6]}"
    try:
        with background([flower, worker_command(name, 1)], env, tmp_path / "logs"):
            _poll(lambda: _get(f"{base}/api/workers")[0] == 200, 60, "Flower to answer")
            # Then Flower refuses requests without credentials
            assert _get(f"{base}/api/tasks", auth=None)[0] == 401
            assert _get(f"{base}/api/tasks", auth="operator:wrong")[0] == 401
            # When an import runs
            job_id = client.submit_import("t.csv")
            # Then its chunk task is shown by name, with (job id, chunk) args, in PROGRESS
            _poll(
                lambda: _chunk_task(_get(f"{base}/api/tasks")[1], job_id, "PROGRESS"),
                60,
                "the chunk task in PROGRESS",
            )
            trans.rollback()
            summary = client.wait(job_id, timeout=60)
            assert summary.state == "succeeded"
            _poll(
                lambda: _chunk_task(_get(f"{base}/api/tasks")[1], job_id, "SUCCESS"),
                60,
                "the chunk task in SUCCESS",
            )
            tasks = _get(f"{base}/api/tasks")[1]
            job_tasks = [t for t in tasks.values() if t.get("name") == "tasks.imports.run_import"]
            assert [t["args"] for t in job_tasks] == [f"[{job_id}]"]
            assert job_tasks[0]["state"] == "SUCCESS"
            # And no secret appears in what Flower shows
            shown = json.dumps([tasks, _get(f"{base}/api/workers")[1]])
            assert DB_PASSWORD not in shown and "s3cret-pw" not in shown
        logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*.log"))
        assert "import_chunk" in logs  # the worker did log its tasks
        assert DB_PASSWORD not in logs
    finally:
        with contextlib.suppress(Exception):
            trans.rollback()
        locker.close()
