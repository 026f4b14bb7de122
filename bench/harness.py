"""The benchmarks' harness: databases, a Redis database, workers, timing, the one report. The
product runs only as subprocesses (``bulkops``; celery workers and beat through
``worker.supervisor``), configured by their environment: :meth:`Bench.env` is the one place."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg2
import redis
import sqlalchemy

from worker import supervisor
from worker.config import sqlalchemy_url
from worker.db import pg_copy_text as tsv  # a value in COPY text format
from worker.queues import QUEUES

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"  # the tests' Redis claims and the example shop
sys.path.insert(0, str(TESTS))
import redis_claims  # noqa: E402

NAN = float("nan")
Proc = subprocess.Popen[bytes]
Job = dict[str, Any]
Table = tuple[Sequence[str], Sequence[Sequence[Any]]]  # headers, rows
Lines = Sequence[str]
GOALS = ["goal (medians)", "measured", "must", "", "verdict"]  # the goals table's headers
# The runs table: a job's keys, and their headers after "run".
RUN_KEYS = "label state s rows_s base_s x_base plan_s redos deadlocks rss_mb wal ckpts".split()
RUN_HEADERS = (", state, worker s, rows/s, baseline s, x baseline, plan s, redos, deadlocks, RSS MB, "
               "WAL MB base/worker, checkpoints base/worker")
# What the server did in a phase: WAL written (bytes) and checkpoints it started itself.
SERVER = """SELECT pg_current_wal_lsn() - '0/0'::pg_lsn AS wal,
  checkpoints_req + checkpoints_timed AS ckpts FROM pg_stat_bgwriter"""
# A job's row once finished; s: created -> finished, plan_s: claimed -> first chunk started
# (job_chunks.committed_at is the chunk transaction's start).
FINISHED = """SELECT *, extract(epoch FROM finished_at - created_at)::float AS s,
  (SELECT extract(epoch FROM min(c.committed_at) - j.started_at)::float FROM bulkops_ledger.job_chunks c
   WHERE c.job_id = j.id) AS plan_s
FROM bulkops_ledger.jobs j WHERE id = %s AND finished_at IS NOT NULL"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parser(doc: str | None, chunk_size: int = 20_000) -> argparse.ArgumentParser:
    """A bench's command line, with the options every bench has."""
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--runs", type=int, default=3, help="timed runs; medians are reported")
    p.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis-base", default="redis://127.0.0.1:6379")
    p.add_argument("--chunk-size", type=int, default=chunk_size, help="BULKOPS_CHUNK_SIZE")
    p.add_argument("--concurrency", type=int, default=2, help="celery worker -c")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/bulkops-bench"))
    return p


class Bench:
    """One bench run: its databases (``bench_*``), a Redis database (claimed as the tests claim
    theirs, from db 1 up; tests go from 15 down), its processes, jobs, failed checks, tables."""

    def __init__(self, args: argparse.Namespace, **settings: Any) -> None:
        self.args, self.settings = args, settings  # settings: every subprocess's environment
        self.tag, self.claim = f"{os.getpid()}_{time.strftime('%H%M%S')}", contextlib.ExitStack()
        self.databases: list[str] = []
        self.procs: list[Proc] = []
        self.jobs: list[Job] = []  # every race's, for the report
        self.failures: list[str] = []
        self.tables: list[Table] = []  # a bench's own, for the report
        args.work_dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Bench:
        claim = redis_claims.claimed_db(self.args.redis_base, range(1, 16))
        self.redis_url = self.claim.enter_context(claim)
        if self.redis_url is None:
            raise SystemExit("no free Redis database on the server: every one is claimed")
        log(f"Redis for the bench: {self.redis_url}")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # clean up databases and processes
        return self

    def __exit__(self, *exc: object) -> None:
        supervisor.stop_processes(self.procs)
        for db in reversed(self.databases):
            with contextlib.suppress(psycopg2.Error):
                self.drop(db)
        self.refresh()
        self.claim.close()

    def refresh(self) -> None:
        """Keep the claim; empty the queues (nothing of a previous phase runs)."""
        redis_claims.refresh(self.redis_url)
        with contextlib.closing(redis.Redis.from_url(self.redis_url)) as r:
            r.delete(*QUEUES, "unacked", "unacked_index", "unacked_mutex")

    def env(self, url: str, **extra: Any) -> dict[str, str]:
        """A subprocess's settings: only its environment."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "BULKOPS_"))}
        env.update(DATABASE_URL=url, REDIS_URL=self.redis_url,
                   BULKOPS_IMPORT_ROOT=str(self.args.work_dir))
        settings = {"BULKOPS_CHUNK_SIZE": self.args.chunk_size, **self.settings, **extra}
        return env | {k: str(v) for k, v in settings.items()}

    def database(self, role: str, template: str | None = None) -> str:
        """A fresh database (a clone of the ``template`` url), dropped at the end: its url."""
        name = f"bench_{role}_{self.tag}"
        url = urlsplit(self.args.admin_url)._replace(path=f"/{name}").geturl()
        self.drop(url)
        clone = f' TEMPLATE "{urlsplit(template).path[1:]}"' if template else ""
        query(self.args.admin_url, f'CREATE DATABASE "{name}"{clone}', autocommit=True)
        self.databases += [] if url in self.databases else [url]
        return url

    def drop(self, *urls: str) -> None:
        for url in urls:
            sql = f'DROP DATABASE IF EXISTS "{urlsplit(url).path[1:]}" WITH (FORCE)'
            query(self.args.admin_url, sql, autocommit=True)

    def template(self) -> str:
        """A migrated database to clone from, with tests/example_shop's tables too: its url."""
        from example_shop import migrate  # the shop's own Alembic migrations
        url = self.database("tpl")
        self.cli(url, "migrate")
        migrate.upgrade(url)
        return url

    def copy(self, url: str, table: str, columns: Sequence[str], path: Path) -> float:
        """``psql \\copy`` of a TSV file; wall seconds."""
        psql = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c"]
        command = f"\\copy {table}({','.join(columns)}) from '{path}'"
        return timed(subprocess.run, [*psql, command], check=True)

    def cli(self, url: str, *argv: str, **extra: Any) -> str:
        """Run ``bulkops ARGV`` against ``url``; its stdout."""
        out = subprocess.run([str(Path(sys.executable).parent / "bulkops"), *argv], cwd=REPO,
                             env=self.env(url, **extra), capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"bulkops {argv}: exit {out.returncode}: {out.stderr[-800:]}")
        return out.stdout

    def start(self, url: str, what: str, log_name: str, **extra: Any) -> Proc:
        """A worker (once its pool is up) or beat (``what``), in its own process group, through
        ``worker.supervisor``, logging to a fresh ``--work-dir/LOG_NAME.log``."""
        if what == "worker":
            name = f"bench-{self.tag}-{len(self.procs)}"
            cmd = supervisor.worker_command(name, self.args.concurrency)
        else:
            schedule = f"{self.args.work_dir}/beat-{self.tag}"
            cmd = supervisor.celery_command("beat", "--loglevel=INFO", "-s", schedule)
        path = self.args.work_dir / f"{log_name}.log"
        with path.open("wb") as out:
            proc = subprocess.Popen(cmd, env=self.env(url, **extra), cwd=REPO, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        while what == "worker" and not (" ready." in path.read_text(errors="replace")
                                        and len(pool(proc)) >= self.args.concurrency):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start; see {path}")
            time.sleep(0.1)
        return proc

    def stop(self, proc: Proc, kill: bool = False) -> None:
        """Stop the process's whole group (SIGKILL at once with ``kill``); wait for it."""
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        supervisor.stop_processes([proc])
        self.procs.remove(proc)

    def submit(self, url: str, *argv: str, **extra: Any) -> int:
        return int(json.loads(self.cli(url, *argv, "--json", **extra))["id"])

    def wait(self, url: str, job_id: int, timeout: float = 7200) -> Job:
        """The job's row once finished (:data:`FINISHED`).

        One connection, a look every 0.25 s: the times come from the ledger, and a
        connection per look (a server process forked each time) took a tenth of a core
        from the worker it was timing."""
        deadline = time.monotonic() + timeout
        with contextlib.closing(psycopg2.connect(url)) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                while True:
                    cur.execute(FINISHED, (job_id,))
                    if row := cur.fetchone():
                        return dict(zip([d[0] for d in cur.description], row, strict=True))
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"job {job_id} not finished after {timeout} s")
                    time.sleep(0.25)

    def run_job(self, url: str, label: str, *argv: str, **extra: Any) -> Job:
        """``bulkops ARGV`` through a fresh worker; the job row with the worker's peak RSS per
        process (VmHWM of each pool child) and its redone chunks (``retrying`` in its log)."""
        self.refresh()
        proc = self.start(url, "worker", label, **extra)
        try:
            job = self.wait(url, self.submit(url, *argv, **extra))
            job["rss_mb"] = max(pool(proc).values(), default=0.0)
        finally:
            self.stop(proc)
        text = (self.args.work_dir / f"{label}.log").read_text(errors="replace")  # start()'s log
        job["redos"], job["deadlocks"] = text.count("retrying"), text.count("deadlock detected")
        return job

    def race(self, template: str, label: str, baseline: Callable[[str], float], argv: Sequence[str],
             rows: int, check: Callable[[Job, str, str], list[str]], base_rows: int | None = None,
             **extra: Any) -> Job:
        """One run: ``baseline(url)`` (seconds) and ``bulkops ARGV``, each on a fresh clone of
        ``template``, then ``check(job, base_url, url)``; the job row, with ``base_s``, ``rows_s``
        and ``x_base`` (its rows/s over the baseline's ``base_rows``/s)."""
        base, url = self.database("base", template), self.database("work", template)
        before = self.checkpoint()
        base_s = baseline(base)
        base_server = self.server(before)
        before = self.checkpoint()
        job = self.run_job(url, label, *argv, **extra)
        job_server = self.server(before)
        for key in ("wal", "ckpts"):  # a checkpoint in one phase only explains a spread
            job[key] = f"{cell(base_server[key])}/{cell(job_server[key])}"
        job.update(label=label, base_s=base_s, rows_s=rows / job["s"])
        job["x_base"] = job["rows_s"] * base_s / (base_rows or rows)
        logged = [*RUN_KEYS[1:], "rows_rejected"]
        log(f"{label}: " + ", ".join(f"{k} {cell(job[k])}" for k in logged))
        self.failures += [f"{label}: {f}" for f in check(job, base, url)]
        self.drop(base, url)
        self.jobs.append(job)
        return job

    def checkpoint(self) -> dict[str, Any]:
        """Write out every dirty buffer before a timed phase: otherwise the phase that runs
        second (the worker, always after its baseline) pays for the first one's writes, in
        the checkpoint its WAL brings on and in buffers it must write out itself. The
        server's counters after it (:data:`SERVER`)."""
        query(self.args.admin_url, "CHECKPOINT", autocommit=True)
        return self.server()

    def server(self, since: dict[str, Any] | None = None) -> dict[str, Any]:
        """:data:`SERVER`'s counters (WAL in MB), or what they grew by ``since`` then."""
        now = query(self.args.admin_url, SERVER, dicts=True)[0]
        now = {"wal": float(now["wal"]) / 2**20, "ckpts": int(now["ckpts"])}
        return {k: v - since[k] for k, v in now.items()} if since else now

    def values(self, key: str, *labels: str) -> list[Any]:
        """``key`` of the races of these labels (default: every race)."""
        return [j[key] for j in self.jobs if not labels or j["label"] in labels]

    def median(self, key: str, *labels: str) -> float:
        return median(self.values(key, *labels))

    def report(self, title: str, goals: Sequence[list[str]], notes: Lines = (),
               happy: Lines = ()) -> int:
        """:func:`report` with a row per race (numbered per label) first, the goals, then issue 9's:
        no chunk redone by the ``happy`` labels (default: all), peak RSS per process <= 150 MB."""
        runs = [[n, *(j[k] for k in RUN_KEYS)] for label in dict.fromkeys(self.values("label"))
                for n, j in enumerate((r for r in self.jobs if r["label"] == label), 1)]
        if self.jobs:
            redos, rss = max(self.values("redos", *happy), default=NAN), max(self.values("rss_mb"))
            goals = [*goals, goal("chunks redone on the happy path (max)", redos, "<=", 0, ""),
                     goal("worker peak RSS per process (max)", rss, "<=", 150, " MB")]
        headers = ["run", *RUN_HEADERS.split(", ")]
        return report(title, [(headers, runs), *self.tables, (GOALS, goals)], self.failures, notes)


def pool(proc: Proc) -> dict[int, float]:
    """The pool children of a worker's main process: pid -> peak RSS (VmHWM) in MB."""
    out: dict[int, float] = {}
    with contextlib.suppress(OSError):  # the worker or a child is gone
        for task in os.listdir(f"/proc/{proc.pid}/task"):
            for pid in Path(f"/proc/{proc.pid}/task/{task}/children").read_text().split():
                with contextlib.suppress(OSError):
                    status = Path(f"/proc/{pid}/status").read_text()
                    out[int(pid)] = int(status.split("VmHWM:")[1].split()[0]) / 1024
    return out


def query(url: str, sql: str, params: Sequence[Any] = (), dicts: bool = False,
          autocommit: bool = False) -> list[Any]:
    """The rows of one statement, in a transaction of its own (or none: ``autocommit``)."""
    with contextlib.closing(psycopg2.connect(url)) as conn:
        conn.autocommit = autocommit
        with conn.cursor() as cur:
            cur.execute(sql, params or None)
            rows = cur.fetchall() if cur.description else []
            names = [d[0] for d in cur.description or ()]
        conn.commit()
    return [dict(zip(names, r, strict=True)) for r in rows] if dicts else rows


def engine(url: str) -> Any:
    """A SQLAlchemy engine without a pool, for what a bench runs in its own process."""
    return sqlalchemy.create_engine(sqlalchemy_url(url), poolclass=sqlalchemy.pool.NullPool)


def timed(fn: Callable[..., object], *args: Any, **kwargs: Any) -> float:
    started = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - started


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else NAN


def tsv_line(values: Iterable[Any]) -> str:
    return "\t".join(map(tsv, values)) + "\n"


def write_tsv(path: Path, rows: Iterable[Sequence[Any]]) -> Path:
    path.write_text("".join(map(tsv_line, rows)))
    return path


def table_digest(url: str, lines_sql: str) -> tuple[int, str]:
    """(count, md5) of the text lines a query gives (column ``line``), in byte order."""
    md5 = "md5(string_agg(line, E'\\n' ORDER BY line COLLATE \"C\"))"
    row = query(url, f"SELECT count(*), coalesce({md5}, '') FROM ({lines_sql}) x")[0]
    return int(row[0]), str(row[1])


def digest(lines: list[str]) -> tuple[int, str]:
    """The same digest computed in Python (str order is code-point order = UTF-8 byte order)."""
    return len(lines), hashlib.md5("\n".join(sorted(lines)).encode()).hexdigest() if lines else ""


def goal(name: str, got: float, op: str, must: float, unit: str = "x", aim: float = 0) -> list[str]:
    """One row of the goals table: ``got op must`` (">=" or "<="), met or MISSED by how much."""
    bound = f"{op} {must:g}{unit}"
    if got != got:  # NaN
        return [name, "-", bound, "-", "not measured"]
    state = "met" if (got >= must if op == ">=" else got <= must) else "MISSED"
    verdict = f"{state} by {abs(got - must):.2f}{unit}"
    if aim:
        verdict += f"; aim {aim:g}{unit} {'reached' if got >= aim else 'not reached'}"
    return [name, f"{got:.2f}{unit}", bound, state, verdict]


def cell(v: Any) -> str:
    if v is None or v != v:  # not measured (None or NaN)
        return "-"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.2f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def report(title: str, tables: Sequence[Table], failures: Lines = (), notes: Lines = ()) -> int:
    """The one report: every table (the goals' last), the notes, correctness; the exit code."""
    print(f"\n{title}\n{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    for headers, rows in tables:
        if rows:
            cells = [list(map(str, headers))] + [[cell(c) for c in r] for r in rows]
            widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
            print()
            for r in [cells[0], ["-" * w for w in widths], *cells[1:]]:
                print("  ".join([r[0].ljust(widths[0]), *map(str.rjust, r[1:], widths[1:])]))
    print(*notes, sep="\n", end="\n" if notes else "")
    if failures:
        print("\nCORRECTNESS FAILURES:", *failures, sep="\n  ")
        return 1
    print("\ncorrectness: OK")
    return 0
