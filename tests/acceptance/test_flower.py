"""Operators: a real Flower process (with basic auth), driven over its HTTP API.

A job's own task (``tasks.imports.run_import``, the job's ``celery_task_id``)
reads as the job: PROGRESS with the ledger's numbers while it runs, then the
job's end with ``bulkops job --json`` as its result. Chunk tasks are found by
their job id and chunk number.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from acceptance_support import HeldLocks, describe, execute, query, run_bulkops

from worker import client
from worker.embedded import free_port
from worker.supervisor import background, celery_command, worker_command

AUTH = "operator:s3cret-pw"
DB_PASSWORD = "pg-pass-77f1"
JOB_TIMEOUT_S = 120  # generous: a bound against hanging, not a speed claim
CHUNK = 1000  # BULKOPS_CHUNK_SIZE of the test environment (tests/conftest.py)
HELD = "held@example.com"  # a user whose row the test locks: its todos' chunks wait
HOLD = "SELECT id FROM users WHERE email = :e FOR UPDATE"


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


class Flower:
    """Flower's HTTP API at ``base``, with the operator's credentials."""

    def __init__(self, base: str, env: dict[str, str]) -> None:
        self.base = base
        self.env = env

    def tasks(self, **query: str) -> dict[str, Any]:
        status, body = _get(f"{self.base}/api/tasks?{urllib.parse.urlencode(query)}")
        assert status == 200, status
        return body  # type: ignore[no-any-return]

    def task(self, task_id: str) -> dict[str, Any]:
        return self.tasks().get(task_id, {})

    def job_task(self, job_id: int, state: str) -> dict[str, Any]:
        """The job's own task once Flower shows it in ``state``."""
        task_id = query(
            self.env, "SELECT celery_task_id FROM bulkops_ledger.jobs WHERE id = :id", id=job_id
        )
        return _poll(  # type: ignore[no-any-return]
            lambda: (t := self.task(task_id)).get("state") == state and t,
            JOB_TIMEOUT_S,
            f"job {job_id}'s task in {state}",
        )

    def progress(self, job_id: int) -> dict[str, Any]:
        """What the job's task in PROGRESS shows: its result, a JSON object."""
        return json.loads(self.job_task(job_id, "PROGRESS")["result"])  # type: ignore[no-any-return]


@contextlib.contextmanager
def flower_and_worker(env: dict[str, str], tmp_path: Path) -> Iterator[Flower]:
    """Flower behind basic auth and one worker process (concurrency 1: chunks in order)."""
    port = free_port()
    flower = celery_command("flower", f"--port={port}", "--address=127.0.0.1")
    name = f"flower-{uuid.uuid4().hex[:6]}"
    base = f"http://127.0.0.1:{port}"
    with background([flower, worker_command(name, 1)], env, tmp_path / "logs"):
        _poll(lambda: _get(f"{base}/api/workers")[0] == 200, 60, "Flower to answer")
        logs = tmp_path / "logs"
        _poll(
            lambda: any(" ready." in p.read_text(errors="replace") for p in logs.glob("worker*")),
            90,
            "the worker to be ready",
        )
        yield Flower(base, env)


def _job_json(env: dict[str, str], job_id: int) -> dict[str, Any]:
    result = run_bulkops(env, "job", str(job_id), "--json")
    assert result.returncode == 0, describe(result)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _write(path: Path, owners: list[str], bad: frozenset[int] = frozenset()) -> None:
    """A todos CSV, one row per owner; rows numbered in ``bad`` have an unknown status."""
    lines = ["title,status,owner_email"]
    for i, owner in enumerate(owners):
        lines.append(f"todo {path.stem} {i},{'paused' if i in bad else 'active'},{owner}")
    path.write_text("\n".join(lines) + "\n")


def _env(bulkops_env: dict[str, str]) -> dict[str, str]:
    # The database password (trust auth here ignores it) must never surface.
    url = urlsplit(bulkops_env["DATABASE_URL"])
    with_password = urlunsplit(
        url._replace(netloc=f"postgres:{DB_PASSWORD}@{url.hostname}:{url.port}")
    )
    return {**bulkops_env, "FLOWER_BASIC_AUTH": AUTH, "DATABASE_URL": with_password}


def _users(env: dict[str, str]) -> None:
    execute(
        env,
        "INSERT INTO users (email, name) VALUES ('ann@example.com', 'Ann'), (:held, 'Held')",
        held=HELD,
    )


def test_a_running_job_is_progress_in_flower_then_its_summary(
    bulkops_env: dict[str, str], import_root: Path, tmp_path: Path
) -> None:
    # Given Flower behind basic auth, a worker, and a 4-chunk file whose third
    # chunk waits on a user row the test holds locked
    env = _env(bulkops_env)
    _users(env)
    owners = ["ann@example.com"] * (4 * CHUNK)
    owners[2 * CHUNK + 10] = HELD
    _write(import_root / "four.csv", owners)
    with flower_and_worker(env, tmp_path) as flower:
        # Then Flower refuses requests without credentials
        assert _get(f"{flower.base}/api/tasks", auth=None)[0] == 401
        assert _get(f"{flower.base}/api/tasks", auth="operator:wrong")[0] == 401
        with HeldLocks(env, HOLD, e=HELD):
            # When the import runs, up to the held chunk
            job_id = client.submit_import("four.csv")
            _poll(lambda: _job_json(env, job_id)["chunks_done"] == 2, JOB_TIMEOUT_S, "2 chunks")
            # Then its job task is in PROGRESS, with the ledger's numbers (within one chunk)
            job_task = flower.job_task(job_id, "PROGRESS")
            ledger = _job_json(env, job_id)
            shown = _poll(
                lambda: (p := flower.progress(job_id))["chunks_done"] >= ledger["chunks_done"] - 1
                and p,
                JOB_TIMEOUT_S,
                "the job's progress",
            )
            assert job_task["name"] == "tasks.imports.run_import"
            assert job_task["args"] == f"[{job_id}]"
            assert job_task["received"] and job_task["started"]
            assert job_task["worker"].startswith("flower-")  # the worker that took it
            assert shown["job_id"] == job_id and shown["job_state"] == "running"
            assert shown["chunks_total"] == ledger["chunks_total"] == 4
            assert abs(shown["chunks_done"] - ledger["chunks_done"]) <= 1
            assert abs(shown["rows_read"] - ledger["rows_read"]) <= CHUNK
            assert shown["rows_rejected"] == ledger["rows_rejected"] == 0
            assert shown["rows_per_s"] > 0 and shown["eta_s"] >= 0
            # And each chunk task is found by its job id and chunk number
            chunk_2 = flower.tasks(search=f"kwargs:job_id={job_id} kwargs:chunk_no=2")
            assert [t["name"] for t in chunk_2.values()] == ["tasks.imports.import_chunk"]
            assert next(iter(chunk_2.values()))["state"] == "PROGRESS"  # waiting on the lock
        # When the lock is released and the job ends
        summary = client.wait(job_id, timeout=JOB_TIMEOUT_S)
        assert summary.state == "succeeded", summary.error
        # Then its task is SUCCESS with the summary `bulkops job --json` prints
        done = flower.job_task(job_id, "SUCCESS")
        assert json.loads(done["result"]) == _job_json(env, job_id)
        assert done["runtime"] == summary.elapsed_s
        # And all four chunks are listed under the job
        chunks = _poll(
            lambda: len(c := flower.tasks(search=f"kwargs:job_id={job_id}")) == 4 and c,
            JOB_TIMEOUT_S,
            "four chunk tasks",
        )
        assert {t["name"] for t in chunks.values()} == {"tasks.imports.import_chunk"}
        numbers = sorted(ast.literal_eval(t["kwargs"])["chunk_no"] for t in chunks.values())
        assert numbers == [0, 1, 2, 3]
        # And no secret appears in what Flower shows
        shown_all = json.dumps([flower.tasks(), _get(f"{flower.base}/api/workers")[1]])
        assert DB_PASSWORD not in shown_all and "s3cret-pw" not in shown_all
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*.log"))
    assert "import_chunk" in logs  # the worker did log its tasks
    assert DB_PASSWORD not in logs


def test_a_finished_job_is_its_end_in_flower(
    bulkops_env: dict[str, str], import_root: Path, tmp_path: Path
) -> None:
    env = _env(bulkops_env)
    _users(env)
    _write(import_root / "partial.csv", ["ann@example.com"] * 3, bad=frozenset({1}))
    _write(import_root / "failing.csv", ["ann@example.com"] * 3, bad=frozenset({0, 2}))
    _write(import_root / "cancelled.csv", [HELD] * 3)
    with flower_and_worker(env, tmp_path) as flower:
        # A partially succeeded job is SUCCESS, with its summary
        partial = client.submit_import("partial.csv")
        assert client.wait(partial, timeout=JOB_TIMEOUT_S).state == "partially_succeeded"
        task = flower.job_task(partial, "SUCCESS")
        assert json.loads(task["result"]) == _job_json(env, partial)
        # A failed job is FAILURE with the job's error, and its summary
        failing = client.submit_import("failing.csv", max_errors=1)
        failed = client.wait(failing, timeout=JOB_TIMEOUT_S)
        assert failed.state == "failed" and failed.error
        task = flower.job_task(failing, "FAILURE")
        assert task["exception"] == failed.error
        assert json.loads(task["result"]) == _job_json(env, failing)
        # A cancelled job is CANCELLED (cancelling is still PROGRESS), with its summary
        with HeldLocks(env, HOLD, e=HELD):
            job_id = client.submit_import("cancelled.csv")
            flower.job_task(job_id, "PROGRESS")
            cancel = run_bulkops(env, "cancel", str(job_id))
            assert cancel.returncode == 0 and "cancelling" in cancel.stdout, describe(cancel)
            _poll(
                lambda: flower.progress(job_id)["job_state"] == "cancelling",
                JOB_TIMEOUT_S,
                "the job cancelling in Flower",
            )
        assert client.wait(job_id, timeout=JOB_TIMEOUT_S).state == "cancelled"
        task = flower.job_task(job_id, "CANCELLED")
        assert json.loads(task["result"]) == _job_json(env, job_id)
