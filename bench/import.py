"""Import benchmark (issues 9 and 10): files shaped like real exports vs raw ``psql \\copy``.

    python bench/import.py                          # 1,000,000 rows, every variant, 3 runs
    python bench/import.py --linear-rows 10000000   # + one 1%-bad run at 10M rows (linearity)
    python bench/import.py --rows 20000 --runs 1    # smoke run

Variants (files: bench/exports.py): ``bad`` (1% bad rows of every kind), ``clean``,
``exists-insert``/``-skip``/``-upsert`` (5% of the rows already in the table), ``refused`` (5%
refused by a CHECK validation does not know), ``wide`` (tests/example_shop's products, through
``BULKOPS_TARGETS``). Per run and variant, each on a fresh clone: COPY of the rows that must
load, and ``bulkops import`` through a fresh ``celery -A worker worker -c 2``. Then the seed
document's per-row savepoints on the bad file, as a reference. See bench/README.md.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import exports
import harness
import psycopg2
from harness import NAN, Bench, goal, log, median

CHECK = "ALTER TABLE todos ADD CONSTRAINT bench_no_forbidden CHECK (title NOT LIKE '%forbidden%')"
VARIANTS = {  # name -> generate() options, goal vs COPY (must, aim); wide: issue 10 sets none
    "bad": ({"bad": 0.01}, 1.0, 1.3),
    "clean": ({}, 1.1, 1.4),
    "exists-insert": ({"existing": 0.05, "mode": "insert"}, 0.8, None),
    "exists-skip": ({"existing": 0.05, "mode": "skip"}, 0.8, None),
    "exists-upsert": ({"existing": 0.05, "mode": "upsert"}, 0.8, None),
    "refused": ({"forbidden": 0.05}, 0.5, None),
    "wide": ({}, None, None),
}


def savepoints(url: str, path: Path, n: int) -> float:
    """The seed document's pattern: one savepoint per row, one commit; rows/s."""
    with path.open(newline="") as f:
        records = [r for _, r in zip(range(n + 1), csv.reader(f), strict=False)][1:]
    conn = psycopg2.connect(url)
    cur, started = conn.cursor(), time.perf_counter()
    for r in records:
        cur.execute("SAVEPOINT r")
        try:
            cur.execute("INSERT INTO todos (title, status, owner_id, created_at) SELECT %s, %s, id, %s "
                        "FROM users WHERE email = %s", (r[0], r[1], r[3] if len(r) > 3 else None, r[2]))
            cur.execute("RELEASE SAVEPOINT r")
        except (psycopg2.Error, IndexError):
            cur.execute("ROLLBACK TO SAVEPOINT r")
    conn.commit()
    conn.close()
    return len(records) / (time.perf_counter() - started)


def measure(bench: Bench, template: str, ex: exports.Export, name: str) -> tuple[harness.Job, list[str]]:
    wide = ex.target == "products"
    table, columns = ("shop_products", exports.PRODUCT_COPY) if wide else ("todos", exports.TODO_COLUMNS)

    def prepare(url: str) -> None:
        if ex.preload_tsv and ex.preload_tsv.stat().st_size:
            bench.copy(url, table, columns, ex.preload_tsv)
        if name == "refused":
            harness.query(url, CHECK)
        harness.query(url, "ANALYZE")

    def check(job: harness.Job, base: str, url: str) -> list[str]:
        if wide:  # the same table as COPY's, every row inserted
            same = harness.table_digest(url, exports.PRODUCT_LINES) == harness.table_digest(base, exports.PRODUCT_LINES)
            return [] if same and job["rows_inserted"] == ex.rows else [
                f"{job['rows_inserted']:,} of {ex.rows:,} inserted, table {'=' if same else 'differs from'} COPY's"]
        fails = exports.check(url, job, ex)
        if ex.mode == "insert" and exports.todos_digest(base, ex.with_created_at) != harness.digest(ex.table):
            fails.append("the baseline COPY differs from the expectation (bench bug)")
        return fails

    return bench.race(template, name, lambda u: bench.copy(u, table, columns, ex.copy_tsv),
                      ["import", ex.csv.name, "--mode", ex.mode, "--table", ex.target], ex.rows, check, prepare,
                      ex.copy_rows, **(exports.SHOP if wide else {}))


def main() -> int:
    p = harness.parser(__doc__)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    p.add_argument("--linear-rows", type=int, default=0, help="also run 'bad' once at N rows (10M: linearity)")
    p.add_argument("--savepoint-rows", type=int, default=20_000)
    p.add_argument("--no-created-at", action="store_true", help="todos files without the created_at column")
    args = p.parse_args()
    names = args.variants.split(",")
    jobs: dict[str, list[harness.Job]] = {n: [] for n in names}
    failures: list[str] = []
    sp_rates: list[float] = []

    def generate(name: str, rows: int, **opts: object) -> exports.Export:
        if name == "wide":
            return exports.products(args.work_dir, "imp-wide", rows)
        ex = exports.generate(args.work_dir, f"imp-{name}", rows, with_created_at=not args.no_created_at, **opts)
        log(f"generated {name}: {rows:,} rows, {len(ex.rejected):,} expected rejects")
        return ex

    with Bench(args) as bench:
        template = exports.template(bench)
        files = {n: generate(n, args.rows, **VARIANTS[n][0]) for n in names}
        for _ in range(args.runs):
            for name in names:
                job, fails = measure(bench, template, files[name], name)
                jobs[name].append(job)
                failures += fails
            if "bad" in files:
                url = bench.database("sp", template)
                sp_rates.append(savepoints(url, files["bad"].csv, args.savepoint_rows))
                bench.drop(url)
        if args.linear_rows:
            job, fails = measure(bench, template, generate("linear", args.linear_rows, bad=0.01), "linear")
            jobs["linear"] = [job]
            failures += fails

    rate = {n: median([j["rows_s"] for j in js]) for n, js in jobs.items()}
    everything = [j for js in jobs.values() for j in js]
    size_mb = max(ex.csv.stat().st_size for ex in files.values()) / 2**20
    goals = [goal(f"{n} vs raw COPY", median([j["x_base"] for j in jobs[n]]), *VARIANTS[n][1:])
             for n in names if VARIANTS[n][1]]
    goals += harness.health(everything, [j for n in ("bad", "clean", "linear") for j in jobs.get(n, [])])
    goals += [
        goal(f"claim -> first chunk, {size_mb:.0f} MB file (max; goal on 1 GB)",
             max([j["plan_s"] for j in everything if j["plan_s"] is not None], default=NAN), 1,
             lower_is_better=True, unit=" s"),
        goal(f"rows/s at {args.linear_rows or '--linear-rows'} vs {args.rows}",
             rate.get("linear", NAN) / rate.get("bad", NAN), 0.9),
        goal(f"bad vs per-row savepoints ({min(args.savepoint_rows, args.rows):,} rows)", rate.get("bad", NAN) / median(sp_rates), 25),
    ]
    notes = [f"per-row savepoints: {median(sp_rates):,.0f} rows/s"] if sp_rates else []
    if "wide" in jobs:
        notes.append(f"wide (products, {len(exports.PRODUCT_FILE)} columns, 3 lookups) vs raw COPY: "
                     f"{median([j['x_base'] for j in jobs['wide']]):.2f}x (no goal set)")
    return harness.report(
        f"import bench: {args.rows:,} rows, {exports.USERS:,} users, chunk {args.chunk_size:,}, "
        f"celery -c {args.concurrency}, {args.runs} run(s); baseline: psql \\copy of the rows that must load",
        [harness.runs_table(everything)], goals, failures, notes)


if __name__ == "__main__":
    sys.exit(main())
