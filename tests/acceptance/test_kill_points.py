"""The whole worker SIGKILLed at each step of an import: the job ends as an undisturbed run.

Each test stops a real ``celery -A worker worker`` at one chosen point of an
import, deterministically: it holds a PostgreSQL lock the worker needs at that
point and waits until the worker's backend waits on it (``pg_stat_activity``),
then SIGKILLs the worker's process group (main process and pool children),
releases the lock, starts a fresh worker and beat, and waits for the job.

The file (3,000 rows, 6 chunks of 500) has bad rows of several kinds and
duplicates across chunks. The job must end exactly as the same file does,
undisturbed, in a fresh database (``undisturbed``, run once per module): same
state, same counters, same table, same rejected lines.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import json
import os
import signal
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from acceptance_support import (
    CONFIG_VARS,
    HeldLocks,
    PrivateRedis,
    execute,
    kill_group,
    lock_waiters,
    query,
    query_rows,
    this_process_on,
    wait_for,
    without,
    worker_proc,
)
from redis_claims import refresh
from sqlalchemy import text

from worker import client, db, migrate
from worker.models import FINISHED_STATES
from worker.queues import QUEUES
from worker.supervisor import background, celery_command, worker_command

ROWS = 3_000
CHUNK_SIZE = 500
CHUNKS = ROWS // CHUNK_SIZE
FILE = "kill.csv"
OWNERS = [f"owner{i}@example.com" for i in range(20)]
HELD_MID = "held-mid@example.com"  # owns rows of chunk 2 only
HELD_LAST = "held-last@example.com"  # owns rows of the last chunk only
JOB_TIMEOUT_S = 180  # generous: a bound against hanging, not a speed claim

# Beat's recovery re-sends a job whose worker died once its heartbeat is older
# than BULKOPS_STUCK_AFTER_S. The default (300 s) would make each test wait
# minutes for work a dead worker left; 3 s keeps the module fast. No test here
# has a live chunk slower than that (the first worker is dead by then).
RECOVERY = {"BULKOPS_STUCK_AFTER_S": "3"}

CHUNK_TASK = "tasks.imports.import_chunk"
# What sending the first chunk writes to Redis: the queue's binding, then the message.
FAN_OUT_WRITES = {"sadd", "lpush"}


# --- the file ---------------------------------------------------------------------------


def _owner(i: int) -> str:
    if 1000 <= i < 1500 and i % 50 == 25:
        return HELD_MID
    if i >= 2500 and i % 50 == 25:
        return HELD_LAST
    return OWNERS[i % len(OWNERS)]


def _row(i: int) -> list[str]:
    """Data row ``i`` (file line i + 2): good, or bad in one of several ways."""
    if i >= 600 and i % 113 == 0:  # an earlier chunk's line again: a duplicate
        return _row(i - 500)
    title, status, owner = f"todo {i}", ("active", "completed")[i % 2], _owner(i)
    created = f"2024-01-{1 + i % 28:02d}T10:{i % 60:02d}:00+00:00"
    if i % 97 == 5:
        status = "paused"  # not a status
    elif i % 101 == 7:
        title = "   "  # empty title
    elif i % 89 == 3:
        owner = f"nobody{i}@example.com"  # unknown owner
    elif i % 83 == 11:
        created = "yesterday"  # not a timestamp
    elif i % 131 == 17:
        return [title, status, owner, created, "one field too many"]
    return [title, status, owner, created]


def prepare(env: Mapping[str, str], import_root: Path) -> None:
    """The owners in the database and the file under the import root."""
    execute(
        env,
        "INSERT INTO users (email, name) SELECT unnest(CAST(:e AS text[])), 'owner'",
        e=[*OWNERS, HELD_MID, HELD_LAST],
    )
    with (import_root / FILE).open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["title", "status", "owner_email", "created_at"])
        w.writerows(_row(i) for i in range(ROWS))


# --- jobs and what they left --------------------------------------------------------------


def job(env: Mapping[str, str], job_id: int) -> dict[str, Any]:
    ((state, done, total),) = query_rows(
        env,
        "SELECT state, chunks_done, chunks_total FROM bulkops_ledger.jobs WHERE id = :id",
        id=job_id,
    )
    return {"state": state, "done": done, "total": total}


def wait_finished(env: Mapping[str, str], job_id: int) -> None:
    wait_for(
        lambda: job(env, job_id)["state"] in FINISHED_STATES,
        timeout=JOB_TIMEOUT_S,
        what=f"job {job_id} to finish",
    )


def committed(env: Mapping[str, str], job_id: int, chunk_no: int) -> bool:
    return bool(
        query(
            env,
            "SELECT count(*) FROM bulkops_ledger.job_chunks WHERE job_id = :id AND chunk_no = :n",
            id=job_id,
            n=chunk_no,
        )
    )


@dataclass(frozen=True)
class Outcome:
    state: str
    error: str | None
    counters: tuple[int, int, int, int, int]  # read, inserted, updated, skipped, rejected
    chunks: tuple[int, int | None]
    table: list[tuple[Any, ...]]  # todos: (title, status, owner, created_at), sorted
    rejects: list[tuple[Any, ...]]  # (line, column, reason), sorted


def outcome(env: Mapping[str, str], job_id: int) -> Outcome:
    ((state, error, read, ins, upd, skip, rej, done, total),) = query_rows(
        env,
        "SELECT state, error, rows_read, rows_inserted, rows_updated, rows_skipped, "
        "rows_rejected, chunks_done, chunks_total FROM bulkops_ledger.jobs WHERE id = :id",
        id=job_id,
    )
    table = query_rows(
        env,
        "SELECT t.title, t.status, u.email, CAST(t.created_at AS text) FROM todos t "
        "JOIN users u ON u.id = t.owner_id ORDER BY 1, 3",
    )
    rejects = query_rows(
        env,
        'SELECT line, "column", reason FROM bulkops_ledger.job_rejects '
        "WHERE job_id = :id ORDER BY 1, 2, 3",
        id=job_id,
    )
    return Outcome(state, error, (read, ins, upd, skip, rej), (done, total), table, rejects)


def assert_same(actual: Outcome, expected: Outcome) -> None:
    """Field by field, so that a failure says what differs (not a 3,000-row diff)."""
    assert (actual.state, actual.error) == (expected.state, expected.error)
    assert actual.counters == expected.counters, "(read, inserted, updated, skipped, rejected)"
    assert actual.chunks == expected.chunks, "(chunks_done, chunks_total)"
    got, want = set(actual.rejects), set(expected.rejects)
    assert (sorted(got - want)[:10], sorted(want - got)[:10]) == ([], []), "rejects differ"
    assert actual.rejects == expected.rejects, "a rejected line recorded twice"
    got, want = set(actual.table), set(expected.table)
    assert (sorted(got - want)[:10], sorted(want - got)[:10]) == ([], []), "todos differ"
    assert actual.table == expected.table, "a row loaded twice"


@pytest.fixture(scope="module")
def undisturbed(
    admin_engine: Any,
    service_urls: Any,
    template_database: str,
    acceptance_redis: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Outcome:
    """The file imported once with nothing disturbed, in a fresh database."""
    root = tmp_path_factory.mktemp("undisturbed")
    (root / "imports").mkdir()
    name = f"bulkops_t_{uuid.uuid4().hex[:10]}"
    url = urlunsplit(urlsplit(service_urls.admin_database_url)._replace(path=f"/{name}"))
    env = {
        **without(os.environ, *CONFIG_VARS),
        "DATABASE_URL": url,
        "REDIS_URL": acceptance_redis,
        "BULKOPS_IMPORT_ROOT": str(root / "imports"),
        "BULKOPS_CHUNK_SIZE": str(CHUNK_SIZE),
    }
    with admin_engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
    try:
        refresh(acceptance_redis)
        with worker_proc(env, root / "logs"), this_process_on(env):
            prepare(env, root / "imports")
            job_id = client.submit_import(FILE)
            wait_finished(env, job_id)
        result = outcome(env, job_id)
    finally:
        with admin_engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    # The file exercises what it should: every kind of reject, several chunks.
    assert result.state == "partially_succeeded", result.error
    assert result.chunks == (CHUNKS, CHUNKS)
    reasons = " | ".join(r[2] for r in result.rejects)
    for kind in ("status", "title", "unknown owner", "created_at", "fields", "duplicate of line"):
        assert kind in reasons, f"the file has no reject of kind {kind!r}"
    return result


# --- the worker ---------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_worker_and_beat(env: dict[str, str], log_dir: Path) -> Iterator[None]:
    """A new worker (concurrency 2) and beat, whose recovery finds the dead worker's job."""
    beat = celery_command("beat", "--loglevel=INFO", "-s", str(log_dir / "beat-schedule"))
    log_dir.mkdir(parents=True, exist_ok=True)
    with background([worker_command(f"fresh-{uuid.uuid4().hex[:6]}", 2), beat], env, log_dir):
        yield


def kill_env(bulkops_env: dict[str, str]) -> dict[str, str]:
    return {**bulkops_env, "BULKOPS_CHUNK_SIZE": str(CHUNK_SIZE), **RECOVERY}


def broker_messages(redis_url: str, queued: bool = True) -> set[tuple[str, tuple[Any, ...]]]:
    """(task name, arguments) of every message delivered but not acknowledged, and queued.

    The arguments are the positional ones, then ``job_id`` and ``chunk_no`` if
    given by keyword (chunk tasks are sent so, to be searchable in Flower).
    """
    client = redis.Redis.from_url(redis_url)
    try:
        messages = [json.loads(v)[0] for v in client.hvals("unacked")]
        for queue in QUEUES if queued else ():
            messages += [json.loads(v) for v in client.lrange(queue, 0, -1)]
    finally:
        client.close()
    found = set()
    for m in messages:
        args, kwargs = json.loads(base64.b64decode(m["body"]))[:2]
        by_name = tuple(kwargs[k] for k in ("job_id", "chunk_no") if k in kwargs)
        found.add((m["headers"]["task"], (*args, *by_name)))
    return found


# --- the kill points ----------------------------------------------------------------------
#
# The first worker is started before the file is written, so that its start-up
# overlaps the test's own set-up.


# The claim of a queued job waits on this advisory lock (held by the test) while
# CLAIM_GATE's trigger is installed: the job message is delivered, not yet claimed.
CLAIM_GATE_KEY = 8_008_001
CLAIM_GATE = (
    "CREATE FUNCTION test_claim_gate() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN PERFORM pg_advisory_xact_lock(8008001); RETURN NEW; END $$",
    "CREATE TRIGGER test_claim_gate BEFORE UPDATE ON bulkops_ledger.jobs FOR EACH ROW "
    "WHEN (OLD.state = 'queued' AND NEW.state = 'running') EXECUTE FUNCTION test_claim_gate()",
)
JOB_TASK = "tasks.imports.run_import"


def test_killed_right_after_submit(
    bulkops_env: dict[str, str], import_root: Path, tmp_path: Path, undisturbed: Outcome
) -> None:
    # The product's own recovery settings (BULKOPS_STUCK_AFTER_S 300 s): a job
    # stuck until then would not finish within JOB_TIMEOUT_S.
    env = {**without(bulkops_env, "BULKOPS_STUCK_AFTER_S"), "BULKOPS_CHUNK_SIZE": str(CHUNK_SIZE)}
    with worker_proc(env, tmp_path / "killed") as first:
        prepare(env, import_root)
        for sql in CLAIM_GATE:
            execute(env, sql)
        # Given the job's message delivered to the worker, its claim not yet made
        with HeldLocks(env, "SELECT pg_advisory_xact_lock(:k)", k=CLAIM_GATE_KEY):
            job_id = client.submit_import(FILE)
            wait_for(
                lambda: lock_waiters(env, "%UPDATE bulkops_ledger.jobs%") > 0,
                what="the claim to wait",
            )
            # When the whole worker is killed right then
            kill_group(first)
        execute(env, "DROP TRIGGER test_claim_gate ON bulkops_ledger.jobs")
    assert job(env, job_id)["state"] == "queued"
    assert (JOB_TASK, (job_id,)) in broker_messages(env["REDIS_URL"], queued=False), (
        "the job's message must be left delivered and unacknowledged by the dead worker"
    )
    # Then a fresh worker and beat finish the job as an undisturbed run: the dead
    # worker's message is handed back at once, not after the visibility timeout
    with fresh_worker_and_beat(env, tmp_path / "fresh"):
        wait_finished(env, job_id)
    assert_same(outcome(env, job_id), undisturbed)
    assert (
        query(env, "SELECT resent_at FROM bulkops_ledger.jobs WHERE id = :id", id=job_id) is None
    ), "finished by its own message, not re-sent as a stuck job"


def test_killed_while_planning(
    bulkops_env: dict[str, str], import_root: Path, tmp_path: Path, undisturbed: Outcome
) -> None:
    env = kill_env(bulkops_env)
    with worker_proc(env, tmp_path / "killed") as first:
        prepare(env, import_root)
        # Given the plan blocked at its write of the file's repeated keys (job_key_dups)
        with HeldLocks(env, "LOCK TABLE bulkops_ledger.job_key_dups IN ACCESS EXCLUSIVE MODE"):
            job_id = client.submit_import(FILE)
            wait_for(
                lambda: lock_waiters(env, "%job_key_dups%") > 0,
                what="the plan to wait on job_key_dups",
            )
            # When the whole worker is killed while planning (then the lock is released)
            kill_group(first)
    assert job(env, job_id)["done"] == 0
    # Then a fresh worker (and beat's recovery) finish the job as an undisturbed run
    with fresh_worker_and_beat(env, tmp_path / "fresh"):
        wait_finished(env, job_id)
    assert_same(outcome(env, job_id), undisturbed)
    # and the killed planning counted as an attempt: a job whose planning kills
    # its worker every time must end failed, not be sent again forever.
    assert query(env, "SELECT attempts FROM bulkops_ledger.jobs WHERE id = :id", id=job_id) >= 2


def test_killed_mid_chunk(
    bulkops_env: dict[str, str], import_root: Path, tmp_path: Path, undisturbed: Outcome
) -> None:
    env = kill_env(bulkops_env)
    with worker_proc(env, tmp_path / "killed") as first:
        prepare(env, import_root)
        # Given chunk 2 blocked in its insert (its owner's row is locked: the
        # foreign key check waits) while the other chunks commit
        with HeldLocks(env, "SELECT id FROM users WHERE email = :e FOR UPDATE", e=HELD_MID):
            job_id = client.submit_import(FILE)
            wait_for(
                lambda: (
                    lock_waiters(env, "%todos%", wrote=True) > 0 and job(env, job_id)["done"] >= 2
                ),
                what="chunk 2 to wait on its owner, 2 chunks committed",
            )
            # When the whole worker is killed in the middle of that chunk
            kill_group(first)
    assert 2 <= job(env, job_id)["done"] < CHUNKS and not committed(env, job_id, 2)
    # Then a fresh worker finishes the job as an undisturbed run
    with fresh_worker_and_beat(env, tmp_path / "fresh"):
        wait_finished(env, job_id)
    assert_same(outcome(env, job_id), undisturbed)


def test_killed_between_a_chunks_commit_and_its_ack(
    bulkops_env: dict[str, str], import_root: Path, tmp_path: Path, undisturbed: Outcome
) -> None:
    env = kill_env(bulkops_env)
    with worker_proc(env, tmp_path / "killed") as first:
        prepare(env, import_root)
        # Given chunk 2 blocked in its insert, and then the worker's main process
        # (which acknowledges a finished task's message) frozen: the chunk can
        # commit, its message cannot be acknowledged
        held = HeldLocks(env, "SELECT id FROM users WHERE email = :e FOR UPDATE", e=HELD_MID)
        with held:
            job_id = client.submit_import(FILE)
            wait_for(
                lambda: lock_waiters(env, "%todos%", wrote=True) > 0,
                what="chunk 2 to wait on its owner",
            )
            os.kill(first.pid, signal.SIGSTOP)
            held.release()
            wait_for(lambda: committed(env, job_id, 2), what="chunk 2 to commit")
            unacked = broker_messages(env["REDIS_URL"], queued=False)
            # When the whole worker is killed right after the commit
            kill_group(first)
    assert (CHUNK_TASK, (job_id, 2)) in unacked, "the kill must land before the ack"
    # Then a fresh worker finishes the job, and the committed chunk's message,
    # delivered again once its (here short) visibility timeout has passed,
    # changes nothing.
    fast_redelivery = {
        "BULKOPS_TASK_SOFT_TIME_LIMIT": "4",
        "BULKOPS_TASK_TIME_LIMIT": "5",
        "BULKOPS_VISIBILITY_TIMEOUT": "6",
    }
    with fresh_worker_and_beat({**env, **fast_redelivery}, tmp_path / "fresh"):
        wait_finished(env, job_id)
        wait_for(
            lambda: (CHUNK_TASK, (job_id, 2)) not in broker_messages(env["REDIS_URL"]),
            timeout=JOB_TIMEOUT_S,
            what="chunk 2's message to be delivered again and acknowledged",
        )
    assert_same(outcome(env, job_id), undisturbed)


def test_killed_while_the_job_finishes(
    bulkops_env: dict[str, str], import_root: Path, tmp_path: Path, undisturbed: Outcome
) -> None:
    env = kill_env(bulkops_env)
    with worker_proc(env, tmp_path / "killed") as first:
        prepare(env, import_root)
        # Given the last chunk held in its insert until every other chunk committed
        held = HeldLocks(env, "SELECT id FROM users WHERE email = :e FOR UPDATE", e=HELD_LAST)
        with held:
            job_id = client.submit_import(FILE)
            wait_for(
                lambda: (
                    lock_waiters(env, "%todos%", wrote=True) > 0
                    and job(env, job_id)["done"] == CHUNKS - 1
                ),
                what="the last chunk to wait on its owner, every other chunk committed",
            )
            # and then blocked at its finishing UPDATE of the job row
            # (NO KEY UPDATE: the chunk's insert into job_chunks takes KEY SHARE
            # on the job row for its foreign key, which FOR UPDATE would block.)
            job_row = "SELECT id FROM bulkops_ledger.jobs WHERE id = :id FOR NO KEY UPDATE"
            with HeldLocks(env, job_row, id=job_id):
                held.release()
                wait_for(
                    lambda: lock_waiters(env, "%UPDATE bulkops_ledger.jobs%", wrote=True) > 0,
                    what="the last chunk's finishing UPDATE to wait on the job row",
                )
                # When the whole worker is killed while the job finishes
                kill_group(first)
    assert job(env, job_id) == {"state": "running", "done": CHUNKS - 1, "total": CHUNKS}
    # Then a fresh worker finishes the job as an undisturbed run
    with fresh_worker_and_beat(env, tmp_path / "fresh"):
        wait_finished(env, job_id)
    assert_same(outcome(env, job_id), undisturbed)


# --- services restarted -------------------------------------------------------------------


def test_postgres_restarted_between_two_jobs(
    bulkops_env: dict[str, str],
    private_postgres: tuple[Any, str],
    import_root: Path,
    tmp_path: Path,
    undisturbed: Outcome,
    configure: Callable[..., None],
) -> None:
    server, url = private_postgres
    configure(DATABASE_URL=url)
    migrate.upgrade(url)
    env = {**bulkops_env, "DATABASE_URL": url, "BULKOPS_CHUNK_SIZE": str(CHUNK_SIZE)}
    logs = tmp_path / "logs"
    with worker_proc(env, logs):
        prepare(env, import_root)
        with (import_root / "users.csv").open("w", newline="") as f:
            csv.writer(f).writerows(
                [["email", "name"], *([f"w{i}@example.org", "w"] for i in range(2000))]
            )
        # Given a worker whose pool processes hold connections from a first job
        first = client.submit_import("users.csv", table="users")
        wait_finished(env, first)
        assert job(env, first)["state"] == "succeeded"
        # When PostgreSQL restarts before the next job (every pooled connection is dead)
        db.dispose_engine()
        server.stop()
        server.ensure_postgres_running()
        log_before = sum(len(p.read_text(errors="replace")) for p in sorted(logs.glob("*.log")))
        job_id = client.submit_import(FILE)
        wait_finished(env, job_id)
        # (the log is read before the worker is stopped: its shutdown is not the job's)
        log = "".join(p.read_text(errors="replace") for p in sorted(logs.glob("*.log")))
        log = log[log_before:]
    # Then the next job ends as an undisturbed run, and no error surfaced: not
    # in the job, not as a retried chunk or an error in the worker's log
    assert_same(outcome(env, job_id), undisturbed)
    problems = [line for line in log.splitlines() if "ERROR/" in line or "retrying" in line]
    assert problems == []


def test_redis_restarted_while_the_job_fans_out(
    env_on_private_redis: dict[str, str],
    private_redis: PrivateRedis,
    import_root: Path,
    tmp_path: Path,
    undisturbed: Outcome,
) -> None:
    # (env_on_private_redis sets a short BULKOPS_STUCK_AFTER_S: beat's recovery
    # re-sends what the restart lost within seconds.)
    env = {**env_on_private_redis, "BULKOPS_CHUNK_SIZE": str(CHUNK_SIZE)}
    broker = redis.Redis.from_url(private_redis.url)
    with worker_proc(env, tmp_path / "w") as first:
        prepare(env, import_root)
        # Given a job planned while Redis holds every write: its fan-out hangs at
        # the first chunk it sends (the plan is held on a lock until Redis pauses)
        with HeldLocks(env, "LOCK TABLE bulkops_ledger.job_key_dups IN ACCESS EXCLUSIVE MODE"):
            job_id = client.submit_import(FILE)
            wait_for(lambda: lock_waiters(env, "%job_key_dups%") > 0, what="the plan")
            broker.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
        wait_for(
            lambda: any(
                "b" in c["flags"] and c["cmd"] in FAN_OUT_WRITES for c in broker.client_list()
            ),
            what="the planned job's fan-out to send its first chunk",
        )
        # When Redis restarts (without persistence) in the middle of the fan-out
        broker.close()
        private_redis.restart()
        # Then the same worker (with a beat, whose recovery re-sends what the
        # restart lost) survives it and ends the job as an undisturbed run
        beat = celery_command("beat", "--loglevel=INFO", "-s", str(tmp_path / "beat-schedule"))
        with background([beat], env, tmp_path / "beat"):
            wait_finished(env, job_id)
            assert_same(outcome(env, job_id), undisturbed)
            # and then runs the next job too
            assert first.poll() is None, "the worker's main process died in the restart"
            execute(env, "DELETE FROM todos")
            job_id = client.submit_import(FILE)
            wait_finished(env, job_id)
            assert_same(outcome(env, job_id), undisturbed)
