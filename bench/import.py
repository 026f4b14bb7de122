"""Benchmark: import a todos CSV with 1% bad rows through real Celery workers.

    . .venv/bin/activate
    python bench/import.py                          # 1,000,000 rows, 10,000 users, 3 runs
    python bench/import.py --rows 100000 --runs 1   # quick check

Generated once per parameters (deterministic, cached under ``--work-dir``):
10,000 users, a few preloaded todos, a 1,000,000-row ``todos.csv``
(``title,status,owner_email,created_at``) where 1% of the rows are bad, eight
kinds spread through the file (unknown owner, bad status, empty title,
201-character title, bad created_at, duplicate of an earlier line in the same
chunk, wrong field count, duplicate of a preloaded row), the exact list of bad
lines, and the same file without bad rows (the clean file). Every database is
a fresh clone of one migrated template holding the users and preloaded todos.

Each run times, in the same run (order alternating between runs, a
CHECKPOINT before each phase):

* ``worker (1% bad)``: ``celery -A worker worker -c 2`` (a real subprocess),
  ``client.submit_import`` in insert mode, wall time submit -> finished;
* ``raw COPY (good rows)``: ``psql \\copy todos(title,status,owner_id,created_at)``
  of a TSV of the good rows with owner ids resolved;
* the same two for the clean file;
* ``per-row savepoints``: the seed document's pattern (SQLModel ORM,
  ``session.begin_nested()`` + ``add`` + ``flush`` per row, one commit) on the
  file's first 20,000 rows.

Once (first run): ``pgloader`` on the same file into a table with the same
constraints keyed by email, if ``pgloader`` is on PATH, and how many good
(and bad) rows it kept.

Checks (exit 1 when wrong): exact counters; every bad line rejected once with
the expected column, no good line rejected; the imported table equals the
raw-COPY one (count and md5 of every row). Peak RSS (VmHWM) of each worker
pool process is read before the worker stops. Speed is reported, never fails
the run.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import json
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import common
from common import log, median

TARGET_VS_COPY = 0.9
TARGET_VS_SAVEPOINT = 25.0
TARGET_RSS_MB = 150.0

KINDS = (
    "unknown_owner",
    "bad_status",
    "empty_title",
    "long_title",
    "bad_created_at",
    "dup_in_file",
    "field_count",
    "dup_in_table",
)
EXPECTED_COLUMN: dict[str, str | None] = {
    "unknown_owner": "owner_email",
    "bad_status": "status",
    "empty_title": "title",
    "long_title": "title",
    "bad_created_at": "created_at",
    "dup_in_file": "title",
    "field_count": None,
    "dup_in_table": "title",
}
HEADER = ("title", "status", "owner_email", "created_at")
TODO_COLS = ("title", "status", "owner_id", "created_at")

TODOS_CHECKSUM = """
SELECT count(*), md5(string_agg(
    u.email || E'\\t' || t.title || E'\\t' || t.status || E'\\t'
    || to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
    E'\\n' ORDER BY u.email, t.title))
FROM todos t JOIN users u ON u.id = t.owner_id
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--rows", type=int, default=1_000_000, help="data rows in the CSV (default 1,000,000)"
    )
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--bad-rate", type=float, default=0.01)
    p.add_argument(
        "--savepoint-rows", type=int, default=20_000, help="rows for the per-row savepoint pattern"
    )
    p.add_argument("--random-seed", type=int, default=11)
    p.add_argument("--no-clean", action="store_true", help="skip the clean-file phases")
    p.add_argument("--no-savepoint", action="store_true", help="skip the per-row savepoint phase")
    p.add_argument("--no-pgloader", action="store_true", help="skip pgloader even if installed")
    common.common_args(p, redis_db=10)
    return p.parse_args(argv)


# --- the data ------------------------------------------------------------------------


class Dataset:
    """Deterministic rows: good row ``i`` belongs to user ``i // per_user``."""

    def __init__(self, args: argparse.Namespace) -> None:
        from worker.seeding import user_row

        self.seed = args.random_seed
        self.rows = args.rows
        self.users = args.users
        self.per_user = -(-args.rows // args.users)
        self.chunk = args.chunk_size
        self.emails = [user_row(self.seed, n)[0] for n in range(self.users)]
        self.names = [user_row(self.seed, n)[1] for n in range(self.users)]

    @functools.lru_cache(maxsize=4)  # noqa: B019 - one Dataset per process
    def _todos(self, n: int) -> list[tuple[Any, ...]]:
        from worker.seeding import todo_rows

        return todo_rows(self.seed, n, self.per_user, n + 1)

    def good(self, i: int) -> tuple[str, str, str, str]:
        """(title, status, owner_email, created_at) of good row ``i``."""
        n = i // self.per_user
        title, status, _, created = self._todos(n)[i % self.per_user]
        if i % 37 == 5:
            title = f'{title}, "quoted"'  # CSV quoting in some titles
        if i % 3 == 0:
            created = created.replace("+00:00", "Z")
        return title, status, self.emails[n], created

    def preloaded(self, k: int) -> tuple[str, str, int, str]:
        """Preloaded todo ``k`` (title, status, owner index, created_at)."""
        return (
            f"Preloaded task {k:06d}",
            "active",
            (k * 7919) % self.users,
            "2025-06-01T12:00:00+00:00",
        )

    def plan_bad(self, bad_rate: float) -> dict[int, tuple[str, int]]:
        """Row index -> (kind, parameter); kinds balanced, positions spread by a seeded RNG."""
        rng = random.Random(f"{self.seed}:bad:{self.rows}:{bad_rate}:{self.chunk}")
        count = round(self.rows * bad_rate)
        positions = sorted(rng.sample(range(self.rows), count))
        kinds = [KINDS[i % len(KINDS)] for i in range(count)]
        rng.shuffle(kinds)
        bad = set(positions)
        plan: dict[int, tuple[str, int]] = {}
        table_k = 0
        for pos, kind in zip(positions, kinds, strict=True):
            param = 0
            if kind == "dup_in_file":
                # An earlier good row in the same chunk, so which copy is the duplicate
                # does not depend on which worker commits first.
                lo = (pos // self.chunk) * self.chunk
                candidates = [j for j in range(max(lo, pos - 500), pos) if j not in bad]
                if not candidates:
                    kind = "bad_status"
                else:
                    param = rng.choice(candidates)
            elif kind == "dup_in_table":
                param, table_k = table_k, table_k + 1
            plan[pos] = (kind, param)
        return plan

    def bad(self, i: int, kind: str, param: int) -> list[str]:
        """The CSV fields of bad row ``i``."""
        title, status, email, created = self.good(i)
        title = f"{title} (bad {i})"
        if kind == "unknown_owner":
            return [title, status, f"ghost.{i}@example.invalid", created]
        if kind == "bad_status":
            return [title, ("done", "Doing", "activ", "4")[i % 4], email, created]
        if kind == "empty_title":
            return ["" if i % 2 else "   ", status, email, created]
        if kind == "long_title":
            return [("x", "é", "🙂")[i % 3] * 201, status, email, created]
        if kind == "bad_created_at":
            return [
                title,
                status,
                email,
                ("2025-02-30T10:00:00Z", "last tuesday", "2025-13-01")[i % 3],
            ]
        if kind == "dup_in_file":
            o_title, o_status, o_email, _ = self.good(param)
            other = "completed" if o_status != "completed" else "active"
            return [o_title, other, o_email.upper() if i % 2 else o_email, "2025-01-01T00:00:00Z"]
        if kind == "field_count":
            return [title, status] if i % 2 else [title, status, email, created, "extra"]
        if kind == "dup_in_table":
            p_title, _, owner, _ = self.preloaded(param)
            return [p_title, "completed", self.emails[owner], created]
        raise AssertionError(kind)


class Files:
    def __init__(self, work_dir: Path, stem: str) -> None:
        self.csv = work_dir / f"{stem}.csv"
        self.good_tsv = work_dir / f"{stem}-good.tsv"  # title, status, owner_id, created_at
        self.good_keys = work_dir / f"{stem}-goodkeys.tsv"  # title, owner_email (pgloader check)
        self.bad_json = work_dir / f"{stem}-bad.json"  # line -> kind

    def ready(self) -> bool:
        return all(p.exists() for p in (self.csv, self.good_tsv, self.good_keys, self.bad_json))


def generate(ds: Dataset, work_dir: Path, bad_rate: float) -> tuple[Files, dict[int, str]]:
    tag = f"r{ds.rows}-u{ds.users}-c{ds.chunk}-s{ds.seed}-bad{bad_rate:g}"
    files = Files(work_dir, f"todos-{tag}")
    if files.ready():
        bad_lines = {int(k): v for k, v in json.loads(files.bad_json.read_text()).items()}
        return files, bad_lines
    started = time.perf_counter()
    plan = ds.plan_bad(bad_rate)
    bad_lines: dict[int, str] = {}
    tv = common.tsv_value
    with (
        files.csv.open("w", encoding="utf-8", newline="") as f_csv,
        files.good_tsv.open("w", encoding="utf-8", newline="\n") as f_tsv,
        files.good_keys.open("w", encoding="utf-8", newline="\n") as f_keys,
    ):
        writer = csv.writer(f_csv, lineterminator="\n")
        writer.writerow(HEADER)
        for i in range(ds.rows):
            line = i + 2  # the header is line 1
            if i in plan:
                kind, param = plan[i]
                writer.writerow(ds.bad(i, kind, param))
                bad_lines[line] = kind
                continue
            title, status, email, created = ds.good(i)
            writer.writerow((title, status, email, created))
            owner_id = i // ds.per_user + 1
            f_tsv.write(f"{tv(title)}\t{status}\t{owner_id}\t{created}\n")
            f_keys.write(f"{tv(title)}\t{email}\n")
    files.bad_json.write_text(json.dumps(bad_lines))
    log(
        f"generated {files.csv.name}: {ds.rows:,} rows, {len(bad_lines):,} bad "
        f"({dict(Counter(bad_lines.values()))}) in {time.perf_counter() - started:.1f} s"
    )
    return files, bad_lines


def build_template(
    server: common.Server, name: str, ds: Dataset, work_dir: Path, preloaded: int
) -> str:
    """Migrated schema + users (ids 1..N in order) + preloaded todos."""
    url = server.migrated(name)
    users_tsv = work_dir / f"users-u{ds.users}-s{ds.seed}.tsv"
    if not users_tsv.exists():
        common.write_tsv(users_tsv, zip(ds.emails, ds.names, strict=True))
    common.copy_file(url, "users", ("email", "name"), users_tsv)
    with common.connect(url) as conn, conn.cursor() as cur:
        cur.execute("SELECT min(id), max(id), count(*) FROM users")
        lo, hi, n = cur.fetchone()
        assert (lo, hi, n) == (1, ds.users, ds.users), f"users ids not 1..N: {(lo, hi, n)}"
    pre_tsv = work_dir / f"preloaded-u{ds.users}-s{ds.seed}-{preloaded}.tsv"
    common.write_tsv(
        pre_tsv,
        ((t, s, owner + 1, c) for t, s, owner, c in (ds.preloaded(k) for k in range(preloaded))),
    )
    common.copy_file(url, "todos", TODO_COLS, pre_tsv)
    with common.connect(url) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute("VACUUM ANALYZE users")
        cur.execute("VACUUM ANALYZE todos")
    return url


# --- phases --------------------------------------------------------------------------


def worker_import(
    args: argparse.Namespace,
    server: common.Server,
    url: str,
    path: Path,
    tag: str,
    run: int,
    label: str,
) -> tuple[dict[str, Any], Any, list[Any]]:
    from worker import client

    env = common.point_at(url, args.redis_url, args.work_dir, args.chunk_size)
    with common.celery_worker(
        env, args.work_dir / "logs-import", f"bench-import-{tag}", args.concurrency
    ) as w:
        server.checkpoint()
        log(f"run {run}: worker import of {path.name} ({label}) ...")
        meter = common.CpuMeter(
            args.admin_url, common.db_name(url), lambda: [w.proc.pid, *w.pool_pids()]
        )
        summary, wall = common.run_job(lambda: client.submit_import(path.name), meter=meter)
        rss = w.rss()
    cpu = meter.result(args.rows)
    stats = common.job_stats(url, summary.id)
    rejects = client.rejects(summary.id)
    common.release_engine()
    result = {
        "s": wall,
        "rows": summary.rows_read,
        "busy_s": stats["busy_s"],
        "max_chunk_s": stats["max_chunk_s"],
        "chunks": stats["chunks"],
        "pool_rss_mb": rss.pool_peak_mb,
        "pool_rss": {pid: kb / 1024 for pid, kb in rss.pool_kb.items()},
        "main_rss_mb": (rss.main_kb or 0) / 1024,
        "cpu": cpu,
    }
    log(
        f"run {run}: worker ({label}) {wall:.2f} s, {args.rows / wall:,.0f} rows/s; {summary.state} "
        f"read={summary.rows_read:,} inserted={summary.rows_inserted:,} rejected={summary.rows_rejected:,}; "
        f"{stats['chunks']} chunks, {stats['busy_s']:.1f} s chunk work (longest {stats['max_chunk_s']:.2f} s); "
        f"pool peak RSS {', '.join(f'{v:.0f}' for v in result['pool_rss'].values())} MB; {common.cpu_note(cpu)}"
    )
    return result, summary, rejects


def raw_copy(
    server: common.Server, url: str, tsv: Path, rows: int, run: int, label: str
) -> dict[str, Any]:
    server.checkpoint()
    log(f"run {run}: psql \\copy of {rows:,} good rows ({label}) ...")
    meter = common.CpuMeter(server.admin_url, common.db_name(url))
    s = common.copy_file(url, "todos", TODO_COLS, tsv, meter=meter)
    cpu = meter.result(rows)
    log(f"run {run}: raw COPY ({label}) {s:.2f} s, {rows / s:,.0f} rows/s; {common.cpu_note(cpu)}")
    return {"s": s, "rows": rows, "cpu": cpu}


def savepoint_pattern(
    server: common.Server, url: str, csv_path: Path, n: int, run: int
) -> dict[str, Any]:
    """The seed document's pattern: ORM object, begin_nested(), add, flush, per row; one commit."""
    from sqlalchemy.exc import SQLAlchemyError
    from sqlmodel import Session, create_engine, select

    from worker.config import sqlalchemy_url
    from worker.models import Todo, User

    engine = create_engine(sqlalchemy_url(url))
    with csv_path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        records = [row for _, row in zip(range(n), reader, strict=False)]
    loaded = failed = skipped = 0
    server.checkpoint()
    log(f"run {run}: per-row savepoint pattern on {len(records):,} rows ...")
    started = time.perf_counter()
    with Session(engine) as session:
        owners = {u.email: u.id for u in session.exec(select(User))}  # the naive lookup, in memory
        for rec in records:
            if len(rec) != 4:
                skipped += 1
                continue
            title, status, email, created = rec
            nested = session.begin_nested()
            try:
                session.add(
                    Todo(
                        title=title,
                        status=status,
                        owner_id=owners.get(email.strip().lower()),
                        created_at=created or None,
                    )
                )
                session.flush()
                nested.commit()
                loaded += 1
            except SQLAlchemyError:
                nested.rollback()
                failed += 1
        session.commit()
    s = time.perf_counter() - started
    engine.dispose()
    log(
        f"run {run}: savepoints {s:.2f} s, {len(records) / s:,.0f} rows/s "
        f"(loaded {loaded:,}, rolled back {failed:,}, wrong field count {skipped:,})"
    )
    return {"s": s, "rows": len(records), "loaded": loaded, "failed": failed, "skipped": skipped}


def pgloader_run(
    server: common.Server, url: str, files: Files, args: argparse.Namespace, preloaded: int
) -> dict[str, Any] | None:
    """pgloader on the same CSV into a table with the same constraints, keyed by owner email."""
    if shutil.which("pgloader") is None:
        log("pgloader is not on PATH: skipped")
        return None
    from worker.models import STATUSES

    statuses = ", ".join(f"'{s}'" for s in STATUSES)
    setup = f"""
CREATE TABLE pgl_todos (
    id bigserial PRIMARY KEY,
    title varchar(200) NOT NULL CHECK (length(title) > 0),
    status varchar(20) NOT NULL DEFAULT 'active' CHECK (status IN ({statuses})),
    owner_email varchar(320) NOT NULL REFERENCES users(email),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (title, owner_email));
CREATE INDEX ON pgl_todos (title); CREATE INDEX ON pgl_todos (status);
CREATE INDEX ON pgl_todos (owner_email); CREATE INDEX ON pgl_todos (status, created_at);
INSERT INTO pgl_todos (title, status, owner_email, created_at)
    SELECT t.title, t.status, u.email, t.created_at FROM todos t JOIN users u ON u.id = t.owner_id;
CREATE TABLE pgl_expected (title text, owner_email text);
"""
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", setup], check=True
    )
    common.copy_file(url, "pgl_expected", ("title", "owner_email"), files.good_keys)
    root = args.work_dir / "pgloader"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    load = root / "todos.load"
    load.write_text(f"""LOAD CSV
     FROM '{files.csv}'
          HAVING FIELDS (title, status, owner_email, created_at)
     INTO {url}?tablename=pgl_todos
          TARGET COLUMNS (title, status, owner_email, created_at)
     WITH skip header = 1,
          fields optionally enclosed by '"',
          fields escaped by double-quote,
          fields terminated by ','
      SET client_encoding to 'utf8';
""")
    server.checkpoint()
    log(f"pgloader on {files.csv.name} ...")
    started = time.perf_counter()
    proc = subprocess.run(
        ["pgloader", "--root-dir", str(root), "--no-ssl-cert-verification", str(load)],
        capture_output=True,
        text=True,
    )
    s = time.perf_counter() - started
    (root / "pgloader.out").write_text(proc.stdout + proc.stderr)
    row = common.query(
        url,
        f"""
        SELECT (SELECT count(*) FROM pgl_todos) - {preloaded},
               (SELECT count(*) FROM pgl_todos p JOIN pgl_expected e USING (title, owner_email)),
               (SELECT count(*) FROM pgl_expected)""",
    )[0]
    kept, good_kept, good = (int(x) for x in row)
    result = {
        "s": s,
        "rows": args.rows,
        "kept": kept,
        "good_kept": good_kept,
        "good": good,
        "bad_kept": kept - good_kept,
        "rc": proc.returncode,
    }
    log(
        f"pgloader: exit {proc.returncode}, {s:.1f} s, {args.rows / s:,.0f} rows/s; kept {kept:,} rows: "
        f"{good_kept:,} of {good:,} good rows, {kept - good_kept:,} bad rows (output in {root})"
    )
    return result


# --- checks --------------------------------------------------------------------------


def check_import(
    summary: Any,
    rejects: list[Any],
    bad: dict[int, str],
    rows: int,
    label: str,
    run: int,
    samples: dict[str, str],
) -> list[str]:
    fails: list[str] = []
    good = rows - len(bad)
    want_state = "partially_succeeded" if bad else "succeeded"
    got = (
        summary.state,
        summary.rows_read,
        summary.rows_inserted,
        summary.rows_updated,
        summary.rows_skipped,
        summary.rows_rejected,
    )
    want = (want_state, rows, good, 0, 0, len(bad))
    if got != want:
        fails.append(
            f"run {run} {label}: (state, read, inserted, updated, skipped, rejected) = {got}, "
            f"want {want}; error {summary.error}"
        )
    seen = Counter(r.line for r in rejects)
    twice = [ln for ln, c in seen.items() if c > 1]
    missing = sorted(set(bad) - set(seen))
    extra = sorted(set(seen) - set(bad))
    wrong_col = [
        (r.line, bad[r.line], r.column)
        for r in rejects
        if r.line in bad and r.column != EXPECTED_COLUMN[bad[r.line]]
    ]
    for name, items in (
        ("rejected more than once", twice),
        ("bad lines not rejected", missing),
        ("good lines rejected", extra),
        ("rejects with an unexpected column", wrong_col),
    ):
        if items:
            fails.append(f"run {run} {label}: {len(items)} {name}, e.g. {items[:5]}")
    for r in rejects:
        if r.line in bad and bad[r.line] not in samples:
            samples[bad[r.line]] = f"line {r.line} [{r.column}] {r.reason}"
    return fails


def checksum(url: str) -> tuple[int, str]:
    row = common.query(url, TODOS_CHECKSUM)[0]
    return int(row[0]), str(row[1])


# --- main ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.use_repo(args.repo)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    tag = time.strftime("%H%M%S")
    log(
        f"import bench: {args.rows:,} rows, {args.users:,} users, {args.bad_rate:.1%} bad, {args.runs} run(s), "
        f"chunk {args.chunk_size:,}, -c {args.concurrency}; {common.machine_note()}"
    )
    ds = Dataset(args)
    bad_files, bad = generate(ds, args.work_dir, args.bad_rate)
    clean_files, clean_bad = generate(ds, args.work_dir, 0.0) if not args.no_clean else (None, {})
    preloaded = max(1, sum(1 for k in bad.values() if k == "dup_in_table")) * 2
    server = common.Server(args.admin_url)
    failures: list[str] = []
    samples: dict[str, str] = {}
    results: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("copy_bad", "worker_bad", "copy_clean", "worker_clean", "savepoint")
    }
    expected_sum: dict[str, tuple[int, str]] = {}
    pgl: dict[str, Any] | None = None
    watch = common.CodeWatch()
    stack = contextlib.ExitStack()
    stack.enter_context(common.bench_redis(args, prefer=10))
    log(f"Redis for the workers: {args.redis_url}")
    try:
        template = f"bench_imp_tpl_{tag}"
        build_template(server, template, ds, args.work_dir, preloaded)
        dropped = common.purge_queues(args.redis_url)
        if dropped:
            log(f"dropped {dropped} stale message(s) from {args.redis_url}")
        for run in range(1, args.runs + 1):
            pairs = [("bad", bad_files, bad)]
            if clean_files is not None:
                pairs.append(("clean", clean_files, clean_bad))
            for label, files, bad_lines in pairs:
                copy_db, work_db = f"bench_imp_copy_{tag}", f"bench_imp_work_{tag}"
                copy_url = server.migrated(copy_db, template)
                work_url = server.migrated(work_db, template)
                good_rows = args.rows - len(bad_lines)

                def do_copy(
                    label=label, files=files, copy_url=copy_url, good_rows=good_rows
                ) -> None:  # type: ignore[no-untyped-def]
                    results[f"copy_{label}"].append(
                        raw_copy(server, copy_url, files.good_tsv, good_rows, run, label)
                    )

                def do_worker(
                    label=label, files=files, work_url=work_url, bad_lines=bad_lines
                ) -> None:  # type: ignore[no-untyped-def]
                    watch.mark(f"run {run} worker {label}")
                    r, summary, rejects = worker_import(
                        args,
                        server,
                        work_url,
                        files.csv,
                        tag,
                        run,
                        f"{args.bad_rate:.0%} bad" if bad_lines else "clean",
                    )
                    results[f"worker_{label}"].append(r)
                    failures.extend(
                        check_import(summary, rejects, bad_lines, args.rows, label, run, samples)
                    )

                for phase in (do_copy, do_worker) if run % 2 else (do_worker, do_copy):
                    phase()
                if label not in expected_sum:
                    expected_sum[label] = checksum(copy_url)
                    want = good_rows + preloaded
                    if expected_sum[label][0] != want:
                        failures.append(
                            f"raw COPY ({label}) has {expected_sum[label][0]} todos, want {want}"
                        )
                got = checksum(work_url)
                if got != expected_sum[label]:
                    failures.append(
                        f"run {run} {label}: imported table {got} differs from raw COPY's "
                        f"{expected_sum[label]}"
                    )
                else:
                    log(
                        f"run {run}: imported table ({label}) equals the raw COPY one ({got[0]:,} todos)"
                    )
                server.drop(copy_db)
                server.drop(work_db)
            if not args.no_savepoint:
                sp_db = f"bench_imp_sp_{tag}"
                sp_url = server.migrated(sp_db, template)
                results["savepoint"].append(
                    savepoint_pattern(server, sp_url, bad_files.csv, args.savepoint_rows, run)
                )
                server.drop(sp_db)
            if run == 1 and not args.no_pgloader:
                pg_db = f"bench_imp_pgl_{tag}"
                pg_url = server.migrated(pg_db, template)
                pgl = pgloader_run(server, pg_url, bad_files, args, preloaded)
                server.drop(pg_db)
    finally:
        common.release_engine()
        if not args.keep:
            server.drop_all()
        stack.close()

    report(args, results, pgl, samples, len(bad))
    print(watch.note())
    if failures:
        print("\nCORRECTNESS FAILURES:", *failures, sep="\n  ")
        return 1
    print(
        "\ncorrectness: OK (exact counters; every bad line rejected once with its column, no good line "
        "rejected; imported tables equal raw COPY's, md5 of every row)"
    )
    return 0


def _rates(rs: list[dict[str, Any]]) -> list[float]:
    return [r["rows"] / r["s"] for r in rs]


def report(
    args: argparse.Namespace,
    res: dict[str, list[dict[str, Any]]],
    pgl: dict[str, Any] | None,
    samples: dict[str, str],
    n_bad: int,
) -> None:
    print()
    print(
        f"import bench: {args.rows:,}-row todos CSV, {args.users:,} users, {n_bad:,} bad rows "
        f"({args.bad_rate:.1%}, {len(KINDS)} kinds); {args.runs} run(s); chunk {args.chunk_size:,} rows; "
        f"celery -c {args.concurrency}; {common.machine_note()}"
    )
    if samples:
        print("\nreject reasons (one per kind):")
        for kind in KINDS:
            if kind in samples:
                print(f"  {kind:<15} {samples[kind]}")

    # per run
    print()
    head = [
        "run",
        "copy 1% s",
        "worker 1% s",
        "ratio 1%",
        "copy clean s",
        "worker clean s",
        "ratio clean",
        "savepoint rows/s",
        "worker/savepoint",
        "pool RSS MB (max)",
    ]
    rows = []
    ratios: dict[str, list[float]] = {"bad": [], "clean": [], "sp": []}
    for i in range(args.runs):

        def get(key: str) -> dict[str, Any] | None:
            return res[key][i] if i < len(res[key]) else None

        cb, wb, cc, wc, sp = (
            get(k) for k in ("copy_bad", "worker_bad", "copy_clean", "worker_clean", "savepoint")
        )
        rb = (wb["rows"] / wb["s"]) / (cb["rows"] / cb["s"]) if cb and wb else float("nan")
        rc = (wc["rows"] / wc["s"]) / (cc["rows"] / cc["s"]) if cc and wc else float("nan")
        rs = (wb["rows"] / wb["s"]) / (sp["rows"] / sp["s"]) if wb and sp else float("nan")
        for k, v in (("bad", rb), ("clean", rc), ("sp", rs)):
            if v == v:
                ratios[k].append(v)
        rss = max([r["pool_rss_mb"] for r in (wb, wc) if r], default=float("nan"))
        nan = float("nan")
        rows.append(
            [
                i + 1,
                cb["s"] if cb else nan,
                wb["s"] if wb else nan,
                rb,
                cc["s"] if cc else nan,
                wc["s"] if wc else nan,
                rc,
                sp["rows"] / sp["s"] if sp else nan,
                rs,
                rss,
            ]
        )
    print(common.table(head, rows))

    # medians
    print()
    med: list[list[Any]] = []

    def line(name: str, key: str, ratio: list[float] | None, target: str, ok: bool | None) -> None:
        rs = res[key]
        if not rs:
            return
        med.append(
            [
                name,
                rs[0]["rows"],
                median([r["s"] for r in rs]),
                median(_rates(rs)),
                median(ratio) if ratio else float("nan"),
                target,
                "" if ok is None else ("yes" if ok else "NO"),
            ]
        )

    line("raw psql \\copy, good rows of the 1% file", "copy_bad", None, "", None)
    line(
        "worker import, 1% bad (submit->finished)",
        "worker_bad",
        ratios["bad"],
        f">= {TARGET_VS_COPY} x COPY",
        bool(ratios["bad"]) and median(ratios["bad"]) >= TARGET_VS_COPY,
    )
    line("raw psql \\copy, clean file", "copy_clean", None, "", None)
    line(
        "worker import, clean file",
        "worker_clean",
        ratios["clean"],
        f">= {TARGET_VS_COPY} x COPY",
        bool(ratios["clean"]) and median(ratios["clean"]) >= TARGET_VS_COPY,
    )
    line("ORM per-row savepoints (seed doc)", "savepoint", None, "", None)
    print(common.table(["median of runs", "rows", "s", "rows/s", "x COPY", "target", "met"], med))
    if ratios["sp"]:
        r = median(ratios["sp"])
        print(
            f"\nworker (1% bad) vs per-row savepoints: {r:.1f} x (target >= {TARGET_VS_SAVEPOINT:.0f} x: "
            f"{'yes' if r >= TARGET_VS_SAVEPOINT else 'NO'}); per run {', '.join(f'{x:.1f}' for x in ratios['sp'])}"
        )
    for key, name in (("bad", "1% bad"), ("clean", "clean")):
        if ratios[key]:
            w, c = res[f"worker_{key}"], res[f"copy_{key}"]
            print(
                f"ratio {name}: per run {', '.join(f'{x:.2f}' for x in ratios[key])}; "
                f"ratio of medians {median(_rates(w)) / median(_rates(c)):.2f} "
                f"(worker rows/s counts every row read, good and bad; COPY's counts the rows it loaded)"
            )
    for key in ("worker_bad", "worker_clean"):
        rs = res[key]
        if rs:
            print(
                f"{key}: chunk work (sum of job_chunks.elapsed_s, before commit) median "
                f"{median([r['busy_s'] for r in rs]):.1f} s over {rs[0]['chunks']} chunks, longest chunk "
                f"{median([r['max_chunk_s'] for r in rs]):.2f} s; wall {median([r['s'] for r in rs]):.1f} s "
                f"x {args.concurrency} processes"
            )
    cpu_rows = []
    for key, name in (
        ("copy_bad", "raw COPY, 1% file"),
        ("worker_bad", "worker, 1% bad"),
        ("copy_clean", "raw COPY, clean"),
        ("worker_clean", "worker, clean"),
    ):
        cs = [r["cpu"] for r in res[key] if "cpu" in r]
        if cs:
            cpu_rows.append(
                [
                    name,
                    median([c["python_us_row"] for c in cs]),
                    median([c["pg_us_row"] for c in cs]),
                    median([c["python_us_row"] + c["pg_us_row"] for c in cs]),
                    median([c["ours_cores"] for c in cs]),
                    median([c["machine_busy_cores"] for c in cs]),
                ]
            )
    if cpu_rows:
        print(
            "\nwhere the CPU went (medians; client = worker processes or psql; postgres = their backends; "
            f"machine = all processes on the {common.os.cpu_count()} cores, other engineers' included):"
        )
        print(
            common.table(
                [
                    "phase",
                    "client us/row",
                    "postgres us/row",
                    "total us/row",
                    "our cores",
                    "machine busy cores",
                ],
                cpu_rows,
            )
        )
    all_rss = [
        v
        for key in ("worker_bad", "worker_clean")
        for r in res[key]
        for v in r["pool_rss"].values()
    ]
    mains = [r["main_rss_mb"] for key in ("worker_bad", "worker_clean") for r in res[key]]
    if all_rss:
        print(
            f"worker pool peak RSS (VmHWM per pool process, all runs): max {max(all_rss):.0f} MB, median "
            f"{median(all_rss):.0f} MB (target <= {TARGET_RSS_MB:.0f} MB: "
            f"{'yes' if max(all_rss) <= TARGET_RSS_MB else 'NO'}); worker main process max {max(mains):.0f} MB"
        )
    if res["savepoint"]:
        sp = res["savepoint"][0]
        print(
            f"per-row savepoints on {sp['rows']:,} rows: loaded {sp['loaded']:,}, rolled back {sp['failed']:,}, "
            f"wrong field count {sp['skipped']:,} (no validation: blank titles and the like load)"
        )
    if pgl:
        print(
            f"pgloader (run 1, same CSV, table keyed by email with the same constraints): exit {pgl['rc']}, "
            f"{pgl['s']:.1f} s, {pgl['rows'] / pgl['s']:,.0f} rows/s; kept {pgl['good_kept']:,} of "
            f"{pgl['good']:,} good rows and {pgl['bad_kept']:,} bad rows"
        )
    elif not args.no_pgloader:
        print("pgloader: not on PATH, skipped")


if __name__ == "__main__":
    sys.exit(main())
