"""Helpers for the acceptance tests: run programs as a user would, look at the database."""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from worker import db
from worker.config import sqlalchemy_url
from worker.supervisor import background, worker_command

# A bound against hanging on a job of the fault tests, not a speed claim.
JOB_TIMEOUT_S = 240

CONFIG_VARS = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "TEST_DATABASE_URL",
    "TEST_REDIS_URL",
)
BROKER_VARS = ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")  # unset: REDIS_URL names Redis


@contextlib.contextmanager
def this_process_on(env: Mapping[str, str]) -> Iterator[None]:
    """This process's settings, engine and producers on ``env`` (``worker.app.using``)."""
    from worker.app import using
    from worker.config import load_settings

    with using(load_settings({**env, **dict.fromkeys(BROKER_VARS)})):
        yield


# --- running programs -----------------------------------------------------------------


def bulkops_command(*args: str) -> list[str]:
    """The installed ``bulkops`` script of this interpreter, else ``python -m worker.cli``."""
    script = shutil.which("bulkops", path=str(Path(sys.executable).parent)) or shutil.which(
        "bulkops"
    )
    base = [script] if script else [sys.executable, "-m", "worker.cli"]
    return [*base, *args]


def run_program(
    cmd: Sequence[str],
    env: Mapping[str, str],
    timeout: float = 120.0,
    cwd: Path | None = None,
    kill_group: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in its own process group; on timeout kill the whole group and fail.

    With ``kill_group`` (the default) whatever the program left in its group is
    killed when it returns; a test that checks for leftovers passes False.
    """
    proc = subprocess.Popen(
        list(cmd),
        env=dict(env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(
            f"{' '.join(cmd)} did not finish within {timeout} s\n"
            f"stdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}",
            pytrace=False,
        )
    finally:
        if kill_group:  # nothing the program started may outlive it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)


def run_bulkops(
    env: Mapping[str, str],
    *args: str,
    timeout: float = 120.0,
    cwd: Path | None = None,
    kill_group: bool = True,
) -> subprocess.CompletedProcess[str]:
    return run_program(bulkops_command(*args), env, timeout=timeout, cwd=cwd, kill_group=kill_group)


def without(env: Mapping[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in names}


def free_closed_port() -> int:
    """A local TCP port nothing listens on (bound once, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"exit {result.returncode}\n--- stdout ---\n{result.stdout[-4000:]}\n"
        f"--- stderr ---\n{result.stderr[-4000:]}"
    )


# --- the database, seen from outside -------------------------------------------------


def query(env: Mapping[str, str], sql: str, **params: Any) -> Any:
    """One scalar from the test's database, on a connection of its own."""
    engine = create_engine(sqlalchemy_url(env["DATABASE_URL"]), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()
    finally:
        engine.dispose()


def execute(env: Mapping[str, str], sql: str, **params: Any) -> None:
    """Run one statement in the test's database and commit it."""
    engine = create_engine(sqlalchemy_url(env["DATABASE_URL"]), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text(sql), params)
    finally:
        engine.dispose()


def query_rows(env: Mapping[str, str], sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Every row of ``sql`` from the test's database, as tuples, on a connection of its own."""
    engine = create_engine(sqlalchemy_url(env["DATABASE_URL"]), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


class HeldLocks:
    """Statements run in a transaction left open, so the locks they take stay held.

    Released (rolled back) by :meth:`release` or on leaving the ``with`` block.
    A test uses it to stop a worker at a chosen statement, deterministically.
    """

    def __init__(self, env: Mapping[str, str], *statements: str, **params: Any) -> None:
        self._engine = create_engine(sqlalchemy_url(env["DATABASE_URL"]), poolclass=NullPool)
        self._conn = self._engine.connect()
        self._trans = self._conn.begin()
        for sql in statements:
            self._conn.execute(text(sql), params)

    def release(self) -> None:
        if self._trans.is_active:
            self._trans.rollback()
            self._conn.close()
            self._engine.dispose()

    def __enter__(self) -> HeldLocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_waiters(env: Mapping[str, str], query_like: str, wrote: bool = False) -> int:
    """Backends of the test's database waiting on a lock in a statement ``ILIKE query_like``.

    With ``wrote``, only those whose transaction has already written something
    (it has an xid): e.g. a chunk blocked at its last statement, not a reader.
    """
    return int(
        query(
            env,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock' AND query ILIKE :like"
            + (" AND backend_xid IS NOT NULL" if wrote else ""),
            like=query_like,
        )
    )


# --- workers, killed -------------------------------------------------------------------


@contextlib.contextmanager
def worker_proc(env: dict[str, str], log_dir: Path, concurrency: int = 2) -> Iterator[Any]:
    """A real ``celery -A worker worker`` (own process group) for the block; yields its Popen."""
    name = f"faults-{uuid.uuid4().hex[:6]}"
    with background([worker_command(name, concurrency)], env, log_dir) as procs:
        yield procs[0]


def kill_group(proc: Any) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def wait_for(predicate: Any, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def seed_emails(n: int) -> list[str]:
    emails = [f"user{i}@example.com" for i in range(n)]
    with db.session_scope() as s:
        s.execute(
            text("INSERT INTO users (email, name) SELECT unnest(CAST(:e AS text[])), 'u'"),
            {"e": emails},
        )
    return emails


def write_todos(path: Path, rows: int, emails: list[str]) -> set[tuple[str, str]]:
    expected = set()
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["title", "status", "owner_email"])
        for i in range(rows):
            title, owner = f"todo number {i}", emails[i % len(emails)]
            w.writerow([title, ("active", "completed")[i % 2], owner])
            expected.add((title, owner))
    return expected


def todo_table() -> set[tuple[str, str]]:
    with db.session_scope() as s:
        return {
            (str(t), str(e))
            for t, e in s.execute(
                text("SELECT t.title, u.email FROM todos t JOIN users u ON u.id = t.owner_id")
            )
        }


def pool_children(main_pid: int) -> list[int]:
    """The worker's pool processes (children of its main process)."""
    children = Path(f"/proc/{main_pid}/task/{main_pid}/children")
    try:
        return [int(p) for p in children.read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


# --- a private Redis ---------------------------------------------------------------------


class PrivateRedis:
    def __init__(self, port: int, workdir: Path) -> None:
        self.port, self.workdir = port, workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is needed for the Redis restart tests")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError):
                if redis.Redis.from_url(self.url).ping():
                    return
            time.sleep(0.1)
        raise AssertionError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # no SHUTDOWN SAVE: everything in memory is gone
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()
