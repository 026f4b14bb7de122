"""Import benchmark (issues 9 and 10): files shaped like real exports vs raw ``psql \\copy``.

    python bench/import.py                          # 1,000,000 rows, every variant, 3 runs
    python bench/import.py --linear-rows 10000000   # + one 1%-bad run at 10M rows (linearity)
    python bench/import.py --rows 20000 --runs 1    # smoke run

Per run and variant (bench/exports.py), each on a fresh clone: COPY of the rows that must load vs ``bulkops
import`` through a fresh worker; then the seed document's per-row savepoints. See bench/README.md.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import exports
import harness
import psycopg2
from harness import NAN, goal, median

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
            cur.execute("INSERT INTO todos (title, status, owner_id, created_at) SELECT %s, %s, id, %s"
                        " FROM users WHERE email = %s", (r[0], r[1], r[3] if len(r) > 3 else None, r[2]))
            cur.execute("RELEASE SAVEPOINT r")
        except (psycopg2.Error, IndexError):
            cur.execute("ROLLBACK TO SAVEPOINT r")
    conn.commit()
    conn.close()
    return len(records) / (time.perf_counter() - started)


def measure(bench: harness.Bench, template: str, ex: exports.Export, name: str) -> harness.Job:
    """One run of a variant: COPY of the rows that must load vs the import, checked."""
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
            same = len({harness.table_digest(db, exports.PRODUCT_LINES) for db in (base, url)}) == 1
            return [] if same and job["rows_inserted"] == ex.rows else [
                f"{job['rows_inserted']:,} of {ex.rows:,} inserted, table {'=' if same else 'differs from'} COPY's"]
        fails = exports.check(url, job, ex)
        if ex.mode == "insert" and exports.todos_digest(base, ex.with_created_at) != harness.digest(ex.table):
            fails.append("the baseline COPY differs from the expectation (bench bug)")
        return fails

    return bench.race(template, name, lambda u: bench.copy(u, table, columns, ex.copy_tsv),
                      ["import", ex.csv.name, "--mode", ex.mode, "--table", ex.target], ex.rows, check,
                      prepare, ex.copy_rows, **(exports.SHOP if wide else {}))


def main() -> int:
    p = harness.parser(__doc__)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    p.add_argument("--linear-rows", type=int, default=0, help="also run 'bad' once at N rows (10M: linearity)")
    p.add_argument("--savepoint-rows", type=int, default=20_000)
    p.add_argument("--no-created-at", action="store_true", help="todos files without the created_at column")
    args = p.parse_args()
    names = args.variants.split(",")
    sp_rates: list[float] = []

    def generate(name: str, rows: int, **opts: object) -> exports.Export:
        if name == "wide":
            return exports.products(args.work_dir, "imp-wide", rows)
        ex = exports.generate(args.work_dir, f"imp-{name}", rows, with_created_at=not args.no_created_at, **opts)
        harness.log(f"generated {name}: {rows:,} rows, {len(ex.rejected):,} expected rejects")
        return ex

    with harness.Bench(args) as bench:
        template = exports.template(bench)
        files = {n: generate(n, args.rows, **VARIANTS[n][0]) for n in names}
        for _ in range(args.runs):
            for name in names:
                measure(bench, template, files[name], name)
            if "bad" in files:
                url = bench.database("sp", template)
                sp_rates.append(savepoints(url, files["bad"].csv, args.savepoint_rows))
                bench.drop(url)
        if args.linear_rows:
            files["linear"] = generate("linear", args.linear_rows, bad=0.01)
            measure(bench, template, files["linear"], "linear")

    size_mb = max(ex.csv.stat().st_size for ex in files.values()) / 2**20
    plan_s = max([j["plan_s"] for j in bench.jobs if j["plan_s"] is not None], default=NAN)
    goals = [goal(f"{n} vs raw COPY", bench.median("x_base", n), *VARIANTS[n][1:]) for n in names if VARIANTS[n][1]]
    goals += [*bench.health("bad", "clean", "linear"),
        goal(f"claim -> first chunk, {size_mb:.0f} MB file (max; goal on 1 GB)", plan_s, 1,
             lower_is_better=True, unit=" s"),
        goal(f"rows/s at {args.linear_rows or '--linear-rows'} vs {args.rows}",
             bench.median("rows_s", "linear") / bench.median("rows_s", "bad"), 0.9),
        goal(f"bad vs per-row savepoints ({min(args.savepoint_rows, args.rows):,} rows)",
             bench.median("rows_s", "bad") / median(sp_rates), 25)]
    notes = [f"per-row savepoints: {median(sp_rates):,.0f} rows/s"] if sp_rates else []
    if "wide" in names:
        notes.append(f"wide (products, {len(exports.PRODUCT_FILE)} columns, 3 lookups) vs raw COPY: "
                     f"{bench.median('x_base', 'wide'):.2f}x (no goal set)")
    return bench.report(
        f"import bench: {args.rows:,} rows, {exports.USERS:,} users, chunk {args.chunk_size:,}, celery -c "
        f"{args.concurrency}, {args.runs} run(s); baseline: psql \\copy of the rows that must load",
        goals, notes)


if __name__ == "__main__":
    sys.exit(main())
