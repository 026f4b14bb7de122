"""The benchmarks' harness: databases, a Redis database, worker subprocesses, timing, the report.

The product runs only as subprocesses (``bulkops``, ``celery -A worker worker``/``beat``),
configured by their environment: :meth:`Bench.env` is the one place that says how.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import redis

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"  # the tests' Redis claims and the example shop
sys.path.insert(0, str(TESTS))
from redis_claims import claimed_db  # noqa: E402
from redis_claims import refresh as refresh_claim  # noqa: E402

BIN = Path(sys.executable).parent
QUEUES = ("imports", "updates", "maintenance")
NAN = float("nan")
Proc = subprocess.Popen[bytes]
Job = dict[str, Any]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parser(doc: str | None, chunk_size: int = 20_000) -> argparse.ArgumentParser:
    """A bench's command line, with the options every bench has."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="timed runs; medians are reported")
    p.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--redis-base", default="redis://127.0.0.1:6379")
    p.add_argument("--chunk-size", type=int, default=chunk_size, help="BULKOPS_CHUNK_SIZE")
    p.add_argument("--concurrency", type=int, default=2, help="celery worker -c")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/bulkops-bench"))
    return p


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else NAN


class Bench:
    """One bench run: its databases (``bench_*``), a Redis database claimed as the tests claim
    theirs (from db 1 up; tests go from 15 down), its processes. ``settings``: environment
    variables for every subprocess."""

    def __init__(self, args: argparse.Namespace, **settings: Any) -> None:
        self.args, self.settings = args, settings
        self.tag = f"{os.getpid()}_{time.strftime('%H%M%S')}"
        self.databases: list[str] = []
        self.procs: list[Proc] = []
        self._claim = contextlib.ExitStack()
        args.work_dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Bench:
        self.redis_url = self._claim.enter_context(claimed_db(self.args.redis_base, range(1, 16)))
        if self.redis_url is None:
            raise SystemExit("no free Redis database on the server: every one is claimed")
        log(f"Redis for the bench: {self.redis_url}")
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in list(self.procs):
            self.stop(proc)
        for db in reversed(self.databases):
            with contextlib.suppress(psycopg2.Error):
                self.drop(db)
        self.refresh()
        self._claim.close()

    def refresh(self) -> None:
        """Keep the claim; empty the queues (nothing of a previous phase runs)."""
        refresh_claim(self.redis_url)
        with contextlib.closing(redis.Redis.from_url(self.redis_url)) as r:
            r.delete(*QUEUES, "unacked", "unacked_index", "unacked_mutex")

    def env(self, url: str, **extra: Any) -> dict[str, str]:
        """The settings of a subprocess of the product: only its environment."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "BULKOPS_"))}
        env.update(DATABASE_URL=url, REDIS_URL=self.redis_url, BULKOPS_IMPORT_ROOT=str(self.args.work_dir))
        env.update({k: str(v) for k, v in {"BULKOPS_CHUNK_SIZE": self.args.chunk_size, **self.settings,
                                            **extra}.items()})
        return env

    # --- databases --------------------------------------------------------------------

    def database(self, role: str, template: str | None = None) -> str:
        """A fresh database (a clone of ``template``, else empty); dropped at the end."""
        name = f"bench_{role}_{self.tag}"
        self.drop(name)
        query(self.args.admin_url, f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""),
              autocommit=True)
        self.databases += [] if name in self.databases else [name]
        return urlunsplit(urlsplit(self.args.admin_url)._replace(path=f"/{name}"))

    def drop(self, *databases: str) -> None:
        """Drop databases, by url or name."""
        for db in databases:
            query(self.args.admin_url, f'DROP DATABASE IF EXISTS "{dbname(db)}" WITH (FORCE)', autocommit=True)

    def template(self, shop: bool = False) -> tuple[str, str]:
        """A migrated database to clone from (with tests/example_shop's tables too): (name, url)."""
        url = self.database("tpl")
        self.cli(url, "migrate")
        if shop:
            from example_shop import migrate  # the shop's own Alembic migrations

            migrate.upgrade(url)
        return dbname(url), url

    def copy(self, url: str, table: str, columns: Sequence[str], path: Path) -> float:
        """``psql \\copy`` of a TSV file; wall seconds."""
        started = time.perf_counter()
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c",
                        f"\\copy {table}({','.join(columns)}) from '{path}'"], check=True)
        return time.perf_counter() - started

    # --- processes --------------------------------------------------------------------

    def cli(self, url: str, *argv: str, **extra: Any) -> str:
        """Run ``bulkops ARGV`` against ``url``; its stdout."""
        out = subprocess.run([str(BIN / "bulkops"), *argv], env=self.env(url, **extra), cwd=REPO,
                             capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"bulkops {' '.join(argv)}: exit {out.returncode}: {out.stderr[-800:]}")
        return out.stdout

    def start(self, url: str, what: str, log_name: str, **extra: Any) -> Proc:
        """``celery -A worker worker`` (what='worker', once ready) or ``beat``, in its own process
        group, logging to a fresh ``--work-dir/LOG_NAME.log``."""
        cmd = [str(BIN / "celery"), "-A", "worker", what, "--loglevel=INFO"]
        cmd += (["-c", str(self.args.concurrency), "-Q", ",".join(QUEUES), "-n", f"bench-{self.tag}-{len(self.procs)}@%h",
                 "--without-gossip", "--without-mingle"] if what == "worker" else
                ["-s", str(self.args.work_dir / f"beat-{self.tag}")])
        path = self.args.work_dir / f"{log_name}.log"
        with path.open("wb") as out:
            proc = subprocess.Popen(cmd, env=self.env(url, **extra), cwd=REPO, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_path = path  # type: ignore[attr-defined]
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        while what == "worker" and not (" ready." in path.read_text(errors="replace")
                                        and len(pool(proc)) >= self.args.concurrency):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start; see {path}")
            time.sleep(0.1)
        return proc

    def stop(self, proc: Proc, kill: bool = False) -> None:
        """SIGTERM (or SIGKILL) to the process's whole group; wait for it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.procs.remove(proc)

    # --- measuring ----------------------------------------------------------------------

    def submit(self, url: str, *argv: str, **extra: Any) -> int:
        return int(json.loads(self.cli(url, *argv, "--json", **extra))["id"])

    def wait(self, url: str, job_id: int, timeout: float = 7200) -> Job:
        """Poll the ledger until the job finishes; its row, with ``s`` = created -> finished and
        ``plan_s`` = claimed -> first chunk started (``job_chunks.committed_at`` is the chunk
        transaction's start)."""
        deadline = time.monotonic() + timeout
        while not (rows := query(url, "SELECT *, extract(epoch FROM finished_at - created_at)::float AS s, "
                                 "(SELECT extract(epoch FROM min(c.committed_at) - j.started_at)::float "
                                 " FROM job_chunks c WHERE c.job_id = j.id) AS plan_s "
                                 "FROM jobs j WHERE id = %s AND finished_at IS NOT NULL", (job_id,), dicts=True)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not finished after {timeout} s")
            time.sleep(0.05)
        return rows[0]

    def run_job(self, url: str, label: str, *argv: str, **extra: Any) -> Job:
        """``bulkops ARGV`` through a fresh worker; the job row with the worker's peak RSS per
        process (VmHWM of each pool child) and its redone chunks (``retrying`` in its log)."""
        self.refresh()
        proc = self.start(url, "worker", label, **extra)
        try:
            job = self.wait(url, self.submit(url, *argv, **extra))
            job["rss_mb"] = max((vm_hwm_mb(pid) for pid in pool(proc)), default=0.0)
        finally:
            self.stop(proc)
        text = proc.log_path.read_text(errors="replace")  # type: ignore[attr-defined]
        job["redos"], job["deadlocks"] = text.count("retrying"), text.count("deadlock detected")
        return job

    def race(self, template: str, label: str, baseline: Callable[[str], float], argv: Sequence[str], rows: int,
             check: Callable[[Job, str, str], list[str]], prepare: Callable[[str], object] = lambda url: None,
             base_rows: int | None = None, **extra: Any) -> tuple[Job, list[str]]:
        """One run: ``baseline(url)`` (seconds) and ``bulkops ARGV``, each on a fresh clone of
        ``template`` (``prepare``d first), then ``check(job, base_url, url)``: the job row, with
        ``base_s``, ``rows_s`` and ``x_base`` (its rows/s / the baseline's ``base_rows``/s), and
        the failed checks."""
        base, url = self.database("base", template), self.database("work", template)
        prepare(base)
        base_s = baseline(base)
        prepare(url)
        job = self.run_job(url, label, *argv, **extra)
        job.update(label=label, base_s=base_s, rows_s=rows / job["s"],
                   x_base=(rows / job["s"]) / ((base_rows or rows) / base_s))
        log(f"{label}: worker {job['s']:.2f} s ({job['rows_s']:,.0f} rows/s, {job['state']}, rejected "
            f"{job['rows_rejected']:,}, redos {job['redos']}, RSS {job['rss_mb']:.0f} MB); baseline "
            f"{base_s:.2f} s: {job['x_base']:.2f}x")
        fails = [f"{label}: {f}" for f in check(job, base, url)]
        self.drop(base, url)
        return job, fails


def dbname(url_or_name: str) -> str:
    return urlsplit(url_or_name).path[1:] if "://" in url_or_name else url_or_name


def pool(proc: Proc) -> list[int]:
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


def query(url: str, sql: str, params: Sequence[Any] = (), dicts: bool = False, autocommit: bool = False) -> list[Any]:
    conn = psycopg2.connect(url)
    conn.autocommit = autocommit
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params or None)
            rows = cur.fetchall() if cur.description else []
            if dicts:
                rows = [dict(zip([d[0] for d in cur.description], r, strict=True)) for r in rows]
        conn.commit()
        return rows
    finally:
        conn.close()


def tsv(value: Any) -> str:
    """A value in COPY text format."""
    if value is None:
        return r"\N"
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def table_digest(url: str, lines_sql: str) -> tuple[int, str]:
    """(count, md5) of the text lines a query gives (column ``line``), in byte order."""
    row = query(url, f"SELECT count(*), coalesce(md5(string_agg(line, E'\\n' ORDER BY line COLLATE \"C\")), '') "
                f"FROM ({lines_sql}) x")
    return int(row[0][0]), str(row[0][1])


def digest(lines: list[str]) -> tuple[int, str]:
    """The same digest computed in Python (str order is code-point order = UTF-8 byte order)."""
    return (len(lines), hashlib.md5("\n".join(sorted(lines)).encode()).hexdigest()) if lines else (0, "")


# --- the report -------------------------------------------------------------------------

RUNS = ["run", "", "state", "worker s", "rows/s", "baseline s", "x baseline", "plan s", "redos", "deadlocks", "RSS MB"]


def runs_table(jobs: Sequence[Job]) -> tuple[list[str], list[list[Any]]]:
    """A row per job (runs numbered per label)."""
    labels = [j["label"] for j in jobs]
    return RUNS, [[labels[:n + 1].count(j["label"]), j["label"], j["state"], j["s"], j["rows_s"], j["base_s"],
                   j["x_base"], NAN if j["plan_s"] is None else j["plan_s"], j["redos"], j["deadlocks"], j["rss_mb"]]
                  for n, j in enumerate(jobs)]


def health(jobs: Sequence[Job], happy: Sequence[Job] | None = None) -> list[list[Any]]:
    """Every import's goals (issue 9): no chunk redone on the ``happy`` path (default: every
    job), worker peak RSS per process <= 150 MB."""
    redos = max((j["redos"] for j in (jobs if happy is None else happy)), default=NAN)
    return [goal("chunks redone on the happy path (max)", redos, 0, lower_is_better=True, unit=""),
            goal("worker peak RSS per process (max)", max((j["rss_mb"] for j in jobs), default=NAN), 150,
                 lower_is_better=True, unit=" MB")]


def goal(name: str, value: float, must: float, aim: float | None = None, lower_is_better: bool = False,
         unit: str = "x") -> list[Any]:
    """One row of the goals table: met or missed, and by how much."""
    if value != value:
        return [name, "-", f"{must:g}{unit}", "-", "not measured"]
    met = value <= must if lower_is_better else value >= must
    verdict = f"{'met' if met else 'MISSED'} by {abs(value - must):.2f}{unit}"
    if aim is not None:
        verdict += f"; aim {aim:g}{unit} {'reached' if value >= aim else 'not reached'}"
    return [name, f"{value:.2f}{unit}", f"{'<=' if lower_is_better else '>='} {must:g}{unit}",
            "met" if met else "MISSED", verdict]


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


def report(title: str, tables: Sequence[tuple[Sequence[str], Sequence[Sequence[Any]]]],
           goals: Sequence[list[Any]] = (), failures: Sequence[str] = (), notes: Sequence[str] = ()) -> int:
    """The one report: every run, the goals, the notes, correctness; the exit code."""
    print(f"\n{title}\n{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    for table in [*tables, (["goal (medians)", "measured", "must", "", "verdict"], goals)]:
        if table[1]:
            print()
            print_table(*table)
    if notes:
        print(*notes, sep="\n")
    if failures:
        print("\nCORRECTNESS FAILURES:", *failures, sep="\n  ")
        return 1
    print("\ncorrectness: OK")
    return 0
