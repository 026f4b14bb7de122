"""The benchmarks' harness: databases, a Redis database, worker subprocesses, timing, the report.

Everything the product needs reaches it through the environment of a
subprocess (``bulkops`` CLI, ``celery -A worker worker``/``beat``); this
process never re-points its own settings. Nothing here is product code.
"""

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
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import redis

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOCK_KEY = "bulkops:tests:lock"  # tests/redis_claims.py skips a database holding it
QUEUES = ("imports", "updates", "maintenance")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def add_common_args(p: argparse.ArgumentParser, chunk_size: int = 20_000) -> None:
    p.add_argument("--runs", type=int, default=3, help="timed runs; medians are reported")
    p.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis-base", default="redis://127.0.0.1:6379")
    p.add_argument("--chunk-size", type=int, default=chunk_size, help="BULKOPS_CHUNK_SIZE")
    p.add_argument("--concurrency", type=int, default=2, help="celery worker -c")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/bulkops-bench"))


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Bench:
    """One bench run: its databases (``bench_*``), its Redis database, its processes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tag = f"{os.getpid()}_{time.strftime('%H%M%S')}"
        self.databases: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.redis_url = ""
        self._token = f"bench:{os.getpid()}:{uuid.uuid4().hex}"
        args.work_dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Bench:
        self.redis_url = self._claim_redis()
        log(f"Redis for the bench: {self.redis_url}")
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in list(self.procs):
            self.stop(proc)
        for name in reversed(self.databases):
            with contextlib.suppress(psycopg2.Error):
                self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        with contextlib.closing(redis.Redis.from_url(self.redis_url)) as r:
            r.delete(*QUEUES, "unacked", "unacked_index", "unacked_mutex")
            if r.get(LOCK_KEY) == self._token.encode():
                r.delete(LOCK_KEY)

    # --- services -------------------------------------------------------------------

    def _claim_redis(self) -> str:
        """A database no test uses, claimed with the tests' own lock key (from db 1 up;
        tests take theirs from 15 down) and with no other client connected."""
        for db in range(1, 16):
            url = f"{self.args.redis_base}/{db}"
            with contextlib.closing(redis.Redis.from_url(url)) as r:
                me = int(r.client_id())
                if any(int(c.get("db", -1)) == db and int(c["id"]) != me for c in r.client_list()):
                    continue
                if r.set(LOCK_KEY, self._token, nx=True, ex=3600):
                    return url
        raise SystemExit("no free Redis database on the server: every one is claimed")

    def refresh(self) -> None:
        with contextlib.closing(redis.Redis.from_url(self.redis_url)) as r:
            r.expire(LOCK_KEY, 3600)
            r.delete(*QUEUES, "unacked", "unacked_index")  # nothing of a previous phase runs

    def admin(self, sql: str) -> None:
        conn = psycopg2.connect(self.args.admin_url)
        conn.autocommit = True
        try:
            conn.cursor().execute(sql)
        finally:
            conn.close()

    def database(self, role: str, template: str | None = None) -> str:
        """A fresh database (a clone of ``template``, else empty); dropped at the end."""
        name = f"bench_{role}_{self.tag}"
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        if name not in self.databases:
            self.databases.append(name)
        return urlunsplit(urlsplit(self.args.admin_url)._replace(path=f"/{name}"))

    def drop(self, url: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{urlsplit(url).path[1:]}" WITH (FORCE)')

    def template(self) -> tuple[str, str]:
        """A migrated database to clone from: (name, url)."""
        url = self.database("tpl")
        self.cli(url, "migrate")
        return urlsplit(url).path[1:], url

    def env(self, url: str, **extra: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "BULKOPS_"))}
        env.update(
            DATABASE_URL=url,
            REDIS_URL=self.redis_url,
            BULKOPS_IMPORT_ROOT=str(self.args.work_dir),
            BULKOPS_CHUNK_SIZE=str(self.args.chunk_size),
        )
        env.update({k: str(v) for k, v in extra.items()})
        return env

    # --- processes ------------------------------------------------------------------

    def cli(self, url: str, *argv: str, **extra: Any) -> str:
        """Run ``bulkops ARGV`` against ``url``; its stdout."""
        out = subprocess.run([str(BIN / "bulkops"), *argv], env=self.env(url, **extra), cwd=REPO,
                             capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"bulkops {' '.join(argv)}: exit {out.returncode}: {out.stderr[-800:]}")
        return out.stdout

    def start(self, url: str, what: str, log_name: str, **extra: Any) -> subprocess.Popen[bytes]:
        """``celery -A worker worker`` (what='worker') or ``beat``, in its own process group."""
        cmd = [str(BIN / "celery"), "-A", "worker", what, "--loglevel=INFO"]
        if what == "worker":
            cmd += ["-c", str(self.args.concurrency), "-Q", ",".join(QUEUES),
                    "-n", f"bench-{self.tag}-{len(self.procs)}@%h", "--without-gossip", "--without-mingle"]
        else:
            cmd += ["-s", str(self.args.work_dir / f"beat-{self.tag}")]
        path = self.args.work_dir / f"{log_name}.log"
        with path.open("ab") as out:
            proc = subprocess.Popen(cmd, env=self.env(url, **extra), cwd=REPO, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_path = path  # type: ignore[attr-defined]
        self.procs.append(proc)
        if what == "worker":
            deadline = time.monotonic() + 60
            while not (" ready." in path.read_text(errors="replace") and len(pool(proc)) >= self.args.concurrency):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker did not start; see {path}")
                time.sleep(0.1)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], kill: bool = False) -> None:
        """SIGTERM (or SIGKILL) to the process's whole group; wait for it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    @contextlib.contextmanager
    def worker(self, url: str, log_name: str, **extra: Any) -> Iterator[subprocess.Popen[bytes]]:
        self.refresh()
        path = self.args.work_dir / f"{log_name}.log"
        path.unlink(missing_ok=True)
        proc = self.start(url, "worker", log_name, **extra)
        try:
            yield proc
        finally:
            self.stop(proc)

    # --- measuring ------------------------------------------------------------------

    def submit(self, url: str, *argv: str, **extra: Any) -> int:
        return int(json.loads(self.cli(url, *argv, "--json", **extra))["id"])

    def wait(self, url: str, job_id: int, timeout: float = 7200) -> dict[str, Any]:
        """Poll the ledger until the job finishes; its row, with ``s`` = created → finished."""
        deadline = time.monotonic() + timeout
        while True:
            row = query(url, "SELECT *, extract(epoch FROM finished_at - created_at) AS s "
                        "FROM jobs WHERE id = %s AND finished_at IS NOT NULL", (job_id,), dicts=True)
            if row:
                return row[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not finished after {timeout} s")
            time.sleep(0.05)

    def run_job(self, url: str, proc: subprocess.Popen[bytes], *argv: str) -> dict[str, Any]:
        """Submit through the CLI, wait, and add peak RSS and chunk redos to the job row."""
        job = self.wait(url, self.submit(url, *argv))
        job["s"] = float(job["s"])
        job["rss_mb"] = max((vm_hwm_mb(pid) for pid in pool(proc)), default=0.0)
        text = proc.log_path.read_text(errors="replace")  # type: ignore[attr-defined]
        job["redos"] = text.count("retrying")
        return job

    def copy(self, url: str, table: str, columns: Sequence[str], path: Path) -> float:
        """``psql \\copy`` of a TSV file; wall seconds."""
        started = time.perf_counter()
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c",
                        f"\\copy {table}({','.join(columns)}) from '{path}'"], check=True)
        return time.perf_counter() - started


def pool(proc: subprocess.Popen[bytes]) -> list[int]:
    """The pool children of a worker's main process."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{proc.pid}/task"):
            out += [int(x) for x in Path(f"/proc/{proc.pid}/task/{task}/children").read_text().split()]
    return sorted(set(out))


def vm_hwm_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def query(url: str, sql: str, params: Sequence[Any] = (), dicts: bool = False) -> list[Any]:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params or None)
            rows = cur.fetchall() if cur.description else []
            if dicts:
                names = [d[0] for d in cur.description]
                rows = [dict(zip(names, r, strict=True)) for r in rows]
        conn.commit()
        return rows
    finally:
        conn.close()


def tsv(value: Any) -> str:
    """A value in COPY text format."""
    if value is None:
        return r"\N"
    s = str(value)
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


TABLE_LINES = """SELECT u.email || E'\\t' || t.title || E'\\t' || t.status{ts} AS line
FROM todos t JOIN users u ON u.id = t.owner_id"""
TS = " || E'\\t' || to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"


def table_digest(url: str, with_created_at: bool = True) -> tuple[int, str]:
    """(count, md5) of every todo as ``email\\ttitle\\tstatus[\\tcreated_at]``, in byte order."""
    sql = TABLE_LINES.format(ts=TS if with_created_at else "")
    row = query(url, f"SELECT count(*), coalesce(md5(string_agg(line, E'\\n' ORDER BY line COLLATE \"C\")), '') FROM ({sql}) x")
    return int(row[0][0]), str(row[0][1])


def digest(lines: list[str]) -> tuple[int, str]:
    """The same digest computed in Python (str order is code-point order = UTF-8 byte order)."""
    if not lines:
        return 0, ""
    return len(lines), hashlib.md5("\n".join(sorted(lines)).encode()).hexdigest()


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "-" if v != v else (f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.2f}")
        return f"{v:,}" if isinstance(v, int) else str(v)

    cells = [list(map(str, headers))] + [[cell(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, r in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def goal(name: str, value: float, must: float, aim: float | None = None, lower_is_better: bool = False,
         unit: str = "x") -> list[Any]:
    """One row of the goals table: met or missed, and by how much."""
    if value != value:
        return [name, "-", f"{must:g}{unit}", "-", "not measured"]
    met = value <= must if lower_is_better else value >= must
    margin = (must - value if lower_is_better else value - must)
    verdict = f"{'met' if met else 'MISSED'} by {abs(margin):.2f}{unit}"
    if aim is not None:
        verdict += f"; aim {aim:g}{unit} {'reached' if value >= aim else 'not reached'}"
    sign = "<=" if lower_is_better else ">="
    return [name, f"{value:.2f}{unit}", f"{sign} {must:g}{unit}", "met" if met else "MISSED", verdict]


def report(title: str, per_run: tuple[Sequence[str], list[list[Any]]], goals: list[list[Any]],
           failures: list[str], notes: Sequence[str] = ()) -> int:
    """The one report: every run, the goals, the notes, correctness; the exit code."""
    print(f"\n{title}\n{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}\n")
    print_table(*per_run)
    if goals:
        print()
        print_table(["goal (medians)", "measured", "must", "", "verdict"], goals)
    for note in notes:
        print(note)
    if failures:
        print("\nCORRECTNESS FAILURES:", *failures, sep="\n  ")
        return 1
    print("\ncorrectness: OK")
    return 0
