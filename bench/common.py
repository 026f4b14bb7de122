"""Shared helpers for the benchmarks in ``bench/``: databases, workers, psql COPY, tables.

Nothing here is product code. The benchmarks run against the local
PostgreSQL (``--admin-url``, default ``postgresql://postgres@127.0.0.1:5432/postgres``)
and a Redis database of their own (``--redis-url``), create and drop their
own databases (``bench_*``), and start real ``celery -A worker worker``
subprocesses through :mod:`worker.demo`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
WORK_DIR = Path(os.environ.get("BULKOPS_BENCH_DIR", "/tmp/bulkops-bench"))
WORKER_REPO = REPO  # where the workers start (``--repo``: A/B a patched checkout)
READY_TIMEOUT_S = 60.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def common_args(parser: argparse.ArgumentParser, redis_db: int) -> None:
    parser.add_argument("--runs", type=int, default=3, help="timed runs (medians are reported)")
    parser.add_argument(
        "--admin-url", default=DEFAULT_ADMIN_URL, help="a database to CREATE DATABASE from"
    )
    parser.add_argument(
        "--redis-url",
        default="private",
        help="Redis for the bench's workers: 'private' (default) starts a redis-server of its own on a "
        "free port; 'auto' picks a database number on 127.0.0.1:6379 that nobody uses (no keys, no "
        f"clients; tries {redis_db} first); or a redis:// URL",
    )
    parser.add_argument(
        "--chunk-size", type=int, default=20_000, help="BULKOPS_CHUNK_SIZE for the workers"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="celery worker -c")
    parser.add_argument("--keep", action="store_true", help="keep the bench databases (debugging)")
    parser.add_argument(
        "--work-dir", type=Path, default=WORK_DIR, help="generated files and worker logs"
    )
    parser.add_argument(
        "--repo",
        type=Path,
        default=REPO,
        help="checkout the workers run from (default: this one); to A/B a patch, copy the repository, "
        "patch the copy and pass it here (the bench's own client code stays this checkout's)",
    )


def use_repo(path: Path) -> None:
    global WORKER_REPO
    WORKER_REPO = path.resolve()
    if WORKER_REPO != REPO:
        log(f"workers run from {WORKER_REPO}")


# --- databases ---------------------------------------------------------------------


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


class Server:
    """The PostgreSQL server: CREATE / DROP DATABASE, CHECKPOINT, queries."""

    def __init__(self, admin_url: str) -> None:
        from sqlalchemy import create_engine

        from worker.config import sqlalchemy_url

        self.admin_url = admin_url
        self.engine = create_engine(
            sqlalchemy_url(admin_url), isolation_level="AUTOCOMMIT", poolclass=_null_pool()
        )
        self.created: list[str] = []

    def url(self, name: str) -> str:
        return with_database(self.admin_url, name)

    def execute(self, sql: str) -> None:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            conn.execute(text(sql))

    def create(self, name: str, template: str | None = None) -> str:
        self.drop(name)
        clause = f' TEMPLATE "{template}"' if template else ""
        self.execute(f'CREATE DATABASE "{name}"{clause}')
        self.created.append(name)
        return self.url(name)

    def drop(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def migrated(self, name: str, template: str | None = None) -> str:
        """A database at the migrations' head (a clone of ``template`` upgraded, if given).

        Upgrading each clone keeps a run valid when someone adds a migration mid-bench.
        """
        from worker import migrate

        url = self.create(name, template)
        migrate.upgrade(url)
        return url

    def checkpoint(self) -> None:
        """Flush dirty buffers before a timed phase, so one phase does not pay for another."""
        self.execute("CHECKPOINT")

    def drop_all(self) -> None:
        for name in reversed(self.created):
            with contextlib.suppress(Exception):
                self.drop(name)
        self.created.clear()
        self.engine.dispose()


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool


@contextlib.contextmanager
def connect(url: str) -> Iterator[Any]:
    """A plain psycopg2 connection (autocommit off) for setup and checks."""
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        yield conn
    finally:
        conn.close()


def query(
    url: str, sql: str, params: Sequence[Any] | None = None, work_mem: str = "256MB"
) -> list[tuple[Any, ...]]:
    with connect(url) as conn, conn.cursor() as cur:
        cur.execute(f"SET work_mem = '{work_mem}'")
        cur.execute(sql, params)
        rows = cur.fetchall()
        conn.rollback()
        return rows


def copy_file(
    url: str,
    table: str,
    columns: Sequence[str],
    path: Path,
    fmt: str = "text",
    meter: CpuMeter | None = None,
) -> float:
    """``psql -c "\\copy table(cols) from 'path'"``; returns wall seconds (psql start included)."""
    opts = "" if fmt == "text" else f" with (format {fmt})"
    command = f"\\copy {table}({','.join(columns)}) from '{path}'{opts}"
    if meter is not None:
        meter.start()
    started = time.perf_counter()
    proc = subprocess.Popen(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", command],
        stdout=subprocess.DEVNULL,
    )
    while proc.poll() is None:
        if meter is not None:
            meter.python_pids = lambda: [proc.pid]
            meter.sample()
        time.sleep(0.1)
    wall = time.perf_counter() - started
    if meter is not None:
        meter.stop()
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, "psql \\copy")
    return wall


def tsv_value(value: Any) -> str:
    from worker.db import pg_copy_text

    return pg_copy_text(value)


def write_tsv(path: Path, rows: Iterator[Sequence[Any]] | Sequence[Sequence[Any]]) -> int:
    count = 0
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write("\t".join(map(tsv_value, row)))
            f.write("\n")
            count += 1
    tmp.replace(path)
    return count


# --- this process's view of the services -----------------------------------------


def point_at(
    database_url: str, redis_url: str, import_root: Path, chunk_size: int
) -> dict[str, str]:
    """Set this process's environment (and so the workers' it starts); rebuild settings."""
    from worker import db
    from worker.config import reset_settings

    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "BULKOPS_IMPORT_ROOT": str(import_root),
        "BULKOPS_CHUNK_SIZE": str(chunk_size),
    }
    os.environ.update(env)
    os.environ.pop("CELERY_BROKER_URL", None)
    os.environ.pop("CELERY_RESULT_BACKEND", None)
    reset_settings()
    db.dispose_engine()
    return dict(os.environ)


def db_name(url: str) -> str:
    return urlsplit(url).path.strip("/")


def release_engine() -> None:
    """Close this process's pooled connections (before a DROP DATABASE)."""
    from worker import db

    db.dispose_engine()


def free_redis_url(prefer: int, base: str = "redis://127.0.0.1:6379") -> str:
    """A Redis database number with no keys and no connected clients (others run tests here).

    Sharing a database number with another engineer's worker means stealing each
    other's messages, so never do that.
    """
    import redis

    client = redis.Redis.from_url(f"{base}/0")
    try:
        used = {int(k[2:]) for k in client.info("keyspace")}
        used |= {int(c["db"]) for c in client.client_list()}
    finally:
        client.close()
    for n in [prefer, *range(12, 0, -1)]:
        if n not in used:
            return f"{base}/{n}"
    raise RuntimeError("no free Redis database number; pass --redis-url")


def redis_clients(redis_url: str) -> int:
    """Clients connected to the URL's database number, this process's check excluded."""
    import redis

    n = int(urlsplit(redis_url).path.strip("/") or 0)
    client = redis.Redis.from_url(redis_url)
    try:
        return sum(
            1 for c in client.client_list() if int(c["db"]) == n and c.get("cmd") != "client|list"
        )
    finally:
        client.close()


@contextlib.contextmanager
def private_redis(work_dir: Path) -> Iterator[str]:
    """A redis-server of our own on a free local port, no persistence; stopped on exit.

    The shared Redis on :6379 is used by other engineers' workers, and a worker
    on the same database number takes the other's messages (seen here: a bench
    seed message ran as someone else's job). A private server cannot be shared.
    """
    import socket

    import redis

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder = work_dir / f"redis-{port}"
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
                break
            except redis.RedisError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server on port {port} did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def bench_redis(args: argparse.Namespace, prefer: int) -> Iterator[str]:
    """Set ``args.redis_url`` for the bench's workers and clean up after.

    ``private`` (default when redis-server is installed): a server of our own.
    ``auto``: a database number on 127.0.0.1:6379 with no keys and no clients
    (flushed at the end). Anything else: used as given, with a warning if others use it.
    """
    if args.redis_url == "private" and shutil.which("redis-server") is None:
        log("redis-server not installed: using a free database number on 127.0.0.1:6379")
        args.redis_url = "auto"
    if args.redis_url == "private":
        with private_redis(args.work_dir) as url:
            args.redis_url = url
            yield url
        return
    owned = args.redis_url == "auto"
    if owned:
        args.redis_url = free_redis_url(prefer)
    else:
        others = redis_clients(args.redis_url)
        if others:
            log(
                f"WARNING: {others} other client(s) use {args.redis_url}: their workers may take our "
                "messages and ours theirs"
            )
    try:
        yield args.redis_url
    finally:
        with contextlib.suppress(Exception):
            purge_queues(args.redis_url)
            if owned:
                flush_redis(args.redis_url)


def flush_redis(redis_url: str) -> None:
    """Remove every key the bench left in its own (auto-picked) Redis database."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()


def purge_queues(redis_url: str) -> int:
    """Empty our queues in the bench's Redis database; returns how many messages were dropped."""
    import redis

    from worker.queues import QUEUES

    client = redis.Redis.from_url(redis_url)
    try:
        dropped = sum(int(client.llen(q)) for q in QUEUES)
        client.delete(*QUEUES, "unacked", "unacked_index")
        return dropped
    finally:
        client.close()


# --- workers -------------------------------------------------------------------------


def _status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return sorted(set(out))


@dataclass
class WorkerRss:
    main_kb: int | None
    pool_kb: dict[int, int] = field(default_factory=dict)

    @property
    def pool_peak_mb(self) -> float:
        return max(self.pool_kb.values(), default=0) / 1024


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def pool_pids(self) -> list[int]:
        return children(self.proc.pid)

    def rss(self) -> WorkerRss:
        """Peak RSS (VmHWM) of the main process and of each pool child, now."""
        pool = {pid: kb for pid in self.pool_pids() if (kb := _status_kb(pid, "VmHWM")) is not None}
        return WorkerRss(_status_kb(self.proc.pid, "VmHWM"), pool)


@contextlib.contextmanager
def celery_worker(
    env: dict[str, str], log_dir: Path, name: str, concurrency: int = 2
) -> Iterator[Worker]:
    """A real ``celery -A worker worker -c N`` subprocess, ready to take tasks; stopped on exit.

    A worker that dies at start is started once more after a pause (other
    engineers edit the product while benches run; a half-saved file is common).
    """
    from worker.demo import background, worker_command

    cwd = os.getcwd()
    os.chdir(WORKER_REPO)  # `-A worker` and `celeryconfig` import from the repository root
    try:
        for attempt in (1, 2):
            log_dir.mkdir(parents=True, exist_ok=True)
            for old in log_dir.glob("*.log"):
                old.unlink()
            with background([worker_command(name, concurrency)], env, log_dir) as procs:
                worker = Worker(procs[0], sorted(log_dir.glob("*.log"))[0])
                try:
                    _wait_ready(worker, concurrency)
                except RuntimeError as exc:
                    tail = worker.log_path.read_text(errors="replace")[-1500:]
                    if attempt == 2:
                        raise RuntimeError(f"{exc}\n{tail}") from None
                    log(f"worker did not start ({exc}); retrying in 10 s. Log tail:\n{tail}")
                    time.sleep(10)
                    continue
                yield worker
                return
    finally:
        os.chdir(cwd)


def _wait_ready(worker: Worker, concurrency: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            raise RuntimeError(
                f"worker exited with {worker.proc.returncode}; see {worker.log_path}"
            )
        text = worker.log_path.read_text(errors="replace") if worker.log_path.exists() else ""
        if " ready." in text and len(worker.pool_pids()) >= concurrency:
            return
        time.sleep(0.1)
    raise RuntimeError(f"worker not ready after {READY_TIMEOUT_S} s; see {worker.log_path}")


def run_job(
    submit: Callable[[], int], timeout: float = 3600.0, meter: CpuMeter | None = None
) -> tuple[Any, float]:
    """Submit a job and poll the ledger until it finishes; (summary, wall seconds submit → finished)."""
    from worker import client

    last = [0.0]

    def sample(_: Any) -> None:
        if meter is not None and time.perf_counter() - last[0] > 0.25:
            meter.sample()
            last[0] = time.perf_counter()

    if meter is not None:
        meter.start()
    started = time.perf_counter()
    job_id = submit()
    summary = client.wait(job_id, timeout=timeout, poll_s=0.05, on_progress=sample)
    wall = time.perf_counter() - started
    if meter is not None:
        meter.stop()
    return summary, wall


# --- where the CPU goes ----------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process (any process on this host: PostgreSQL backends too)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return None


def system_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v) - idle) / _TICK, sum(v) / _TICK


class CpuMeter:
    """CPU used during a phase by our Python processes, our PostgreSQL backends, and the machine.

    ``python_pids`` are sampled from their value at :meth:`start`; backends of
    ``database`` (found in pg_stat_activity while the phase runs) count from
    zero, since every phase uses a fresh database.
    """

    def __init__(
        self,
        admin_url: str,
        database: str,
        python_pids: Callable[[], list[int]] | None = None,
        query_like: str | None = None,
    ) -> None:
        self.admin_url, self.database = admin_url, database
        self.python_pids = python_pids or (lambda: [])
        self.query_like = query_like
        self.base: dict[int, float] = {}
        self.python: dict[int, float] = {}
        self.backends: dict[int, float] = {}
        self.sys0 = self.sys1 = (0.0, 0.0)
        self.wall0 = self.wall1 = 0.0
        self._conn: Any = None

    def start(self) -> None:
        import psycopg2

        self._conn = psycopg2.connect(self.admin_url)
        self._conn.autocommit = True
        for pid in self.python_pids():
            self.base[pid] = cpu_seconds(pid) or 0.0
        self.sys0, self.wall0 = system_cpu(), time.perf_counter()

    def sample(self) -> None:
        for pid in self.python_pids():
            now = cpu_seconds(pid)
            if now is not None:
                self.python[pid] = now - self.base.setdefault(pid, 0.0)
        with self._conn.cursor() as cur:
            sql = "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
            params: tuple[Any, ...] = (self.database,)
            if self.query_like:
                sql += " AND query ILIKE %s"
                params += (self.query_like,)
            cur.execute(sql, params)
            for (pid,) in cur.fetchall():
                now = cpu_seconds(pid)
                if now is not None:
                    self.backends[pid] = now

    def stop(self) -> None:
        self.sample()
        self.sys1, self.wall1 = system_cpu(), time.perf_counter()
        self._conn.close()

    def result(self, rows: int) -> dict[str, float]:
        wall = self.wall1 - self.wall0
        busy = (self.sys1[0] - self.sys0[0]) / wall if wall else 0.0
        py, pg = sum(self.python.values()), sum(self.backends.values())
        return {
            "python_cpu_s": py,
            "pg_cpu_s": pg,
            "python_us_row": py / rows * 1e6,
            "pg_us_row": pg / rows * 1e6,
            "machine_busy_cores": busy,
            "ours_cores": (py + pg) / wall if wall else 0.0,
        }


def cpu_note(c: dict[str, float]) -> str:
    return (
        f"CPU: ours {c['ours_cores']:.2f} cores (client {c['python_cpu_s']:.1f} s = {c['python_us_row']:.1f} us/row, "
        f"postgres {c['pg_cpu_s']:.1f} s = {c['pg_us_row']:.1f} us/row); machine busy {c['machine_busy_cores']:.2f} "
        f"of {os.cpu_count()} cores"
    )


def job_stats(url: str, job_id: int) -> dict[str, float]:
    """From the ledger: chunks, summed and longest chunk time (``job_chunks.elapsed_s``: the
    chunk's work before commit), distinct worker processes' hosts."""
    row = query(
        url,
        "SELECT count(*), coalesce(sum(elapsed_s), 0), coalesce(max(elapsed_s), 0), "
        "count(DISTINCT worker) FROM job_chunks WHERE job_id = %s",
        (job_id,),
    )[0]
    return {"chunks": int(row[0]), "busy_s": float(row[1]), "max_chunk_s": float(row[2])}


def code_fingerprint() -> str:
    """A short hash of the product code the workers will import (other engineers edit it
    while benches run: results from different code are not comparable)."""
    import hashlib

    h = hashlib.sha1()
    paths = [WORKER_REPO / "celeryconfig.py"]
    for folder in ("worker", "tasks", "migrations"):
        paths += sorted((WORKER_REPO / folder).rglob("*.py"))
    for path in paths:
        with contextlib.suppress(OSError):
            h.update(str(path.relative_to(WORKER_REPO)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:10]


class CodeWatch:
    """Remembers the fingerprint at each phase; reports when the code changed mid-bench."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def mark(self, phase: str) -> str:
        fp = code_fingerprint()
        if self.seen and self.seen[-1][1] != fp:
            log(
                f"WARNING: product code changed before {phase} (fingerprint {self.seen[-1][1]} -> {fp})"
            )
        self.seen.append((phase, fp))
        return fp

    def note(self) -> str:
        versions = list(dict.fromkeys(fp for _, fp in self.seen))
        if len(versions) <= 1:
            return f"product code unchanged during the bench (fingerprint {versions[0] if versions else '-'})"
        changes = [
            f"{p}: {fp}"
            for (p, fp), (_, prev) in zip(self.seen[1:], self.seen, strict=False)
            if fp != prev
        ]
        return (
            f"WARNING: product code changed during the bench ({len(versions)} versions; "
            f"{'; '.join(changes)}): runs on different code are not comparable"
        )


def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return f"{head}{' + uncommitted changes' if dirty else ''}"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --- reporting -------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):.3g}..{max(values):.3g}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def machine_note() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; code {git_state()}"
