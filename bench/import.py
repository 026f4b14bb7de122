"""Import benchmark (issue 9): files shaped like real exports vs raw ``psql \\copy`` of their good rows.

    python bench/import.py                          # 1,000,000 rows, every variant, 3 runs
    python bench/import.py --rows 100000 --runs 1   # smoke run

Variants (bench/exports.py): ``bad`` 1% bad rows of every kind; ``clean``; ``exists-insert``,
``exists-skip``, ``exists-upsert`` 5% of the rows already in the table; ``refused`` 5% titles a
CHECK the validation does not know refuses. Each run and variant: a fresh clone for the
baseline (COPY of the rows the sequential pass inserts) and one for a fresh
``celery -A worker worker -c 2``, submit (``bulkops import``) -> finished from the ledger.
"""

from __future__ import annotations

import argparse
import sys
import time

import exports
import harness
from harness import Bench, goal, log, median

COLS = ("title", "status", "owner_id", "created_at")
CHECK = "ALTER TABLE todos ADD CONSTRAINT bench_no_forbidden CHECK (title NOT LIKE '%forbidden%')"
VARIANTS = {  # name -> generate() options, goal (must, aim)
    "bad": ({"bad": 0.01}, 1.0, 1.3),
    "clean": ({}, 1.1, 1.4),
    "exists-insert": ({"existing": 0.05, "mode": "insert"}, 0.8, None),
    "exists-skip": ({"existing": 0.05, "mode": "skip"}, 0.8, None),
    "exists-upsert": ({"existing": 0.05, "mode": "upsert"}, 0.8, None),
    "refused": ({"forbidden": 0.05}, 0.5, None),
}


def prepare(bench: Bench, template: str, ex: exports.Export, role: str, refused: bool) -> str:
    url = bench.database(role, template)
    if ex.preload_tsv and ex.preload_tsv.stat().st_size:
        bench.copy(url, "todos", COLS, ex.preload_tsv)
    if refused:
        harness.query(url, CHECK)
    harness.query(url, "ANALYZE")
    return url


def savepoints(url: str, path, n: int) -> float:
    """The seed document's pattern: one savepoint per row, one commit; rows/s."""
    import csv

    import psycopg2

    with open(path, newline="") as f:
        records = [r for _, r in zip(range(n), csv.reader(f), strict=False)][1:]
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


def measure(bench: Bench, template: str, ex: exports.Export, mode: str, name: str, run: int) -> tuple[dict, float, list[str]]:
    refused = name == "refused"
    base = prepare(bench, template, ex, "copy", refused)
    copy_s = bench.copy(base, "todos", COLS, ex.copy_tsv)
    fails = []
    if run == 1 and harness.table_digest(base, ex.with_created_at) != harness.digest(ex.table) and mode == "insert":
        fails.append(f"{name}: the baseline COPY differs from the expectation (bench bug)")
    bench.drop(base)
    url = prepare(bench, template, ex, "work", refused)
    with bench.worker(url, f"import-{name}") as w:
        job = bench.run_job(url, w, "import", ex.csv.name, "--mode", mode)
    ratio = (ex.rows / job["s"]) / (ex.copy_rows / copy_s)
    log(f"run {run} {name}: worker {job['s']:.2f} s ({ex.rows / job['s']:,.0f} rows/s, {job['state']}, "
        f"rejected {job['rows_rejected']:,}, redos {job['redos']}, RSS {job['rss_mb']:.0f} MB); "
        f"COPY {copy_s:.2f} s ({ex.copy_rows / copy_s:,.0f} rows/s): {ratio:.2f}x")
    fails += exports.check(url, job, ex, f"run {run} {name}")
    bench.drop(url)
    return job, ratio, fails


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    p.add_argument("--linear-rows", type=int, default=0, help="also run 'bad' once at N rows (10M: linearity)")
    p.add_argument("--savepoint-rows", type=int, default=20_000)
    p.add_argument("--no-created-at", action="store_true", help="files without the created_at column")
    harness.add_common_args(p)
    args = p.parse_args()
    names = args.variants.split(",")
    results: dict[str, list[tuple[dict, float]]] = {n: [] for n in names}
    failures: list[str] = []
    sp_rates: list[float] = []
    with Bench(args) as bench:
        template, tpl_url = bench.template()
        bench.copy(tpl_url, "users", ("email", "name"), exports.users_tsv(args.work_dir / "users.tsv"))
        files = {}
        for name in names:
            opts = dict(VARIANTS[name][0])
            mode = opts.get("mode", "insert")
            files[name] = (exports.generate(args.work_dir, f"imp-{name}", args.rows,
                                            with_created_at=not args.no_created_at, **opts), mode)
            log(f"generated {name}: {args.rows:,} rows, {len(files[name][0].rejected):,} expected rejects")
        for run in range(1, args.runs + 1):
            for name in names:
                job, ratio, fails = measure(bench, template, *files[name], name=name, run=run)
                results[name].append((job, ratio))
                failures += fails
            if "bad" in files:
                url = bench.database("sp", template)
                sp_rates.append(savepoints(url, files["bad"][0].csv, args.savepoint_rows))
                bench.drop(url)
        linear = float("nan")
        if args.linear_rows and "bad" in names:
            ex = exports.generate(args.work_dir, "imp-linear", args.linear_rows, bad=0.01)
            job, _, fails = measure(bench, template, ex, "insert", name="linear", run=1)
            failures += fails
            linear = (ex.rows / job["s"]) / median([args.rows / j["s"] for j, _ in results["bad"]])

    rows = [[run + 1, n, j["state"], j["s"], j["rows_read"] / j["s"], r, j["redos"], j["rss_mb"]]
            for n in names for run, (j, r) in enumerate(results[n])]
    goals = [goal(f"{n} vs raw COPY", median([r for _, r in results[n]]), VARIANTS[n][1], VARIANTS[n][2])
             for n in names]
    jobs = [j for n in names for j, _ in results[n]]
    happy = [j for n in ("bad", "clean") if n in results for j, _ in results[n]]
    goals.append(goal("chunks redone, happy path (max)", max((j["redos"] for j in happy), default=float("nan")),
                      0, lower_is_better=True, unit=""))
    goals.append(goal("worker peak RSS per process (max)", max(j["rss_mb"] for j in jobs), 150,
                      lower_is_better=True, unit=" MB"))
    goals.append(goal(f"rows/s at {args.linear_rows or '--linear-rows'} vs {args.rows}", linear, 0.9))
    if sp_rates:
        goals.append(goal("1% bad vs per-row savepoints", median(
            [args.rows / j["s"] for j, _ in results["bad"]]) / median(sp_rates), 25))
    return harness.report(
        f"import bench: {args.rows:,} rows, {exports.USERS:,} users, chunk {args.chunk_size:,}, "
        f"celery -c {args.concurrency}, {args.runs} run(s)",
        (["run", "variant", "state", "worker s", "rows/s", "x COPY", "redos", "RSS MB"], rows),
        goals, failures,
        [f"per-row savepoints ({args.savepoint_rows:,} rows): {median(sp_rates):,.0f} rows/s"] if sp_rates else [])


if __name__ == "__main__":
    sys.exit(main())
