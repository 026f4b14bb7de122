"""Import benchmark (issues 9 and 10): per run and variant (bench/exports.py), on fresh clones of
its template, COPY of the rows that must load vs ``bulkops import`` through a fresh worker, then
the seed document's per-row savepoints. Usage and goals: bench/README.md."""

from __future__ import annotations

import contextlib
import csv
import itertools
import sys
import time
from pathlib import Path
from typing import Any

import exports
import harness
import psycopg2
from harness import NAN, goal, median

CHECK = "ALTER TABLE todos ADD CONSTRAINT bench_no_forbidden CHECK (title NOT LIKE '%forbidden%')"
INSERT = """INSERT INTO todos (title, status, owner_id, created_at)
SELECT %s, %s, id, %s FROM users WHERE email = %s"""
VARIANTS = {  # name -> generate() options, goal vs COPY (must, aim; 0: none)
    "bad": ({"bad": 0.01}, 1.0, 1.3), "clean": ({}, 1.1, 1.4),
    **{f"exists-{mode}": ({"existing": 0.05, "mode": mode}, 0.8, 0)
       for mode in ("insert", "skip", "upsert")},
    "refused": ({"forbidden": 0.05}, 0.5, 0), "wide": ({}, 0, 0)}


def savepoints(url: str, path: Path, n: int) -> float:
    """The seed document's pattern: one savepoint per row, one commit; rows/s."""
    with path.open(newline="") as f:
        records = list(itertools.islice(csv.reader(f), 1, n + 1))
    with contextlib.closing(psycopg2.connect(url)) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        for r in records:
            cur.execute("SAVEPOINT r")
            try:
                cur.execute(INSERT, (r[0], r[1], r[3], r[2]))
                cur.execute("RELEASE SAVEPOINT r")
            except (psycopg2.Error, IndexError):
                cur.execute("ROLLBACK TO SAVEPOINT r")
        conn.commit()
        return len(records) / (time.perf_counter() - started)


def measure(bench: harness.Bench, name: str, ex: exports.Export, template: str) -> None:
    """One run of a variant: COPY of the rows that must load vs the import, checked."""
    wide = ex.target == "products"
    def check(job: harness.Job, base: str, url: str) -> list[str]:
        if wide:  # the same table as COPY's, every row inserted
            same = len({harness.table_digest(db, exports.PRODUCT_LINES) for db in (base, url)}) == 1
            if same and job["rows_inserted"] == ex.rows:
                return []
            return [f"{job['rows_inserted']:,} of {ex.rows:,} inserted, table "
                    f"{'=' if same else 'differs from'} COPY's"]
        fails = exports.check(url, job, ex)
        copied = harness.table_digest(base, exports.TODO_LINES)
        if ex.mode == "insert" and copied != harness.digest(ex.table):
            fails.append("the baseline COPY differs from the expectation (bench bug)")
        return fails
    argv = ["import", ex.csv.name, "--mode", ex.mode, "--table", ex.target]
    bench.race(template, name, lambda url: bench.copy(url, *ex.into, ex.copy_tsv), argv, ex.rows,
               check, ex.copy_rows, **(exports.SHOP if wide else {}))


def main() -> int:
    p = harness.parser(__doc__)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    p.add_argument("--linear-rows", type=int, default=0, help="also 'bad' once at N rows (10M)")
    p.add_argument("--savepoint-rows", type=int, default=20_000)
    args = p.parse_args()
    names, rates = args.variants.split(","), []
    def prepare(name: str, rows: int, **opts: Any) -> tuple[exports.Export, str]:
        """The variant's file, and its template: the rows already in the table, the CHECK."""
        if name == "wide":
            ex = exports.products(args.work_dir, "imp-wide", rows)
        else:
            ex = exports.generate(args.work_dir, f"imp-{name}", rows, **opts)
            harness.log(f"generated {name}: {rows:,} rows, {len(ex.rejected):,} expected rejects")
        url = bench.database(f"tpl_{name}", template)
        if ex.preload_tsv and ex.preload_tsv.stat().st_size:
            bench.copy(url, *ex.into, ex.preload_tsv)
        if name == "refused":
            harness.query(url, CHECK)
        harness.query(url, "ANALYZE")
        return ex, url
    with harness.Bench(args) as bench:
        template = exports.template(bench)
        variants = {n: prepare(n, args.rows, **VARIANTS[n][0]) for n in names}
        for _ in range(args.runs):
            for name, (ex, url) in variants.items():
                measure(bench, name, ex, url)
            if "bad" in variants:
                url = bench.database("sp", template)
                rates.append(savepoints(url, variants["bad"][0].csv, args.savepoint_rows))
                bench.drop(url)
        if args.linear_rows:
            variants["linear"] = prepare("linear", args.linear_rows, bad=0.01)
            measure(bench, "linear", *variants["linear"])
    size_mb = max(ex.csv.stat().st_size for ex, _ in variants.values()) / 2**20
    plan_s = max([s for s in bench.values("plan_s") if s is not None], default=NAN)
    bad, sp_rows = bench.median("rows_s", "bad"), min(args.savepoint_rows, args.rows)
    musts = {n: VARIANTS[n][1:] for n in names if VARIANTS[n][1]}  # (must, aim)
    goals = [goal(f"{n} vs raw COPY", bench.median("x_base", n), ">=", must, aim=aim)
             for n, (must, aim) in musts.items()]
    claim = f"claim -> first chunk, {size_mb:.0f} MB file (max; goal on 1 GB)"
    linear = f"rows/s at {args.linear_rows or '--linear-rows'} vs {args.rows}"
    goals += [goal(claim, plan_s, "<=", 1, " s"),
              goal(linear, bench.median("rows_s", "linear") / bad, ">=", 0.9),
              goal(f"bad vs per-row savepoints ({sp_rows:,} rows)", bad / median(rates), ">=", 25)]
    notes = [f"per-row savepoints: {median(rates):,.0f} rows/s"] if rates else []
    if args.linear_rows and "bad" in names:  # how much of the slowdown is the database's own
        copy_rate = {n: median([ex.copy_rows / s for s in bench.values("base_s", n)])
                     for n, (ex, _) in variants.items() if n in ("bad", "linear")}
        notes.append(f"raw COPY rows/s at {args.linear_rows:,} vs {args.rows:,} rows: "
                     f"{copy_rate['linear'] / copy_rate['bad']:.2f}")
    if "wide" in names:
        notes.append(f"wide (products, {len(exports.PRODUCT_FILE)} columns, 3 lookups) vs raw "
                     f"COPY: {bench.median('x_base', 'wide'):.2f}x (no goal set)")
    return bench.report(
        f"import bench: {args.rows:,} rows, {exports.USERS:,} users, chunk {args.chunk_size:,}, "
        f"celery -c {args.concurrency}, {args.runs} run(s); baseline: psql \\copy of the rows that "
        "must load", goals, notes, happy=("bad", "clean", "linear"))


if __name__ == "__main__":
    sys.exit(main())
