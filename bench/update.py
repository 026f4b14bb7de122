"""Benchmark: a bulk status update through real Celery workers vs. one raw UPDATE.

    . .venv/bin/activate
    python bench/update.py                        # 1,000,000 matching rows, 3 runs
    python bench/update.py --rows 100000 --runs 1  # quick check

Each run, in two fresh clones of one template database holding ``--rows``
active todos (10,000 users):

* **raw**: ``UPDATE todos SET status = 'completed' WHERE status = 'active'``
  in one statement (the updated_at trigger fires in both phases);
* **worker**: ``celery -A worker worker -c 2`` (a real subprocess) and
  ``client.submit_update_status("completed", ["active"])``, submit to finished,
  in keyset batches of ``--batch-size`` rows, each its own transaction.

Correctness (exit 1 if wrong): the job succeeded, updated every row exactly
once (``rows_updated == rows``) and no active todo is left. Speed is only
reported: target >= 0.7x the raw UPDATE's rows/s, and the longest batch
transaction (the job's ``longest_batch_s``) under one second.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

import common
from common import log, median

TARGET_RATIO = 0.7
USERS = 10_000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="matching todos (default 1,000,000)")
    p.add_argument("--batch-size", type=int, default=10_000, help="BULKOPS_UPDATE_BATCH_SIZE")
    common.common_args(p, redis_db=10)
    return p.parse_args(argv)


def execute(url: str, sql: str, params: tuple[object, ...] = ()) -> None:
    """Run one statement and commit (VACUUM needs autocommit)."""
    with common.connect(url) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql, params)


def fill(url: str, rows: int) -> None:
    execute(
        url,
        "INSERT INTO users (email, name) SELECT 'user' || g || '@example.com', 'User ' || g "
        "FROM generate_series(1, %s) g",
        (USERS,),
    )
    execute(
        url,
        "INSERT INTO todos (title, status, owner_id, created_at) "
        "SELECT 'todo ' || g, 'active', 1 + g %% %s, now() - make_interval(secs => g) "
        "FROM generate_series(1, %s) g",
        (USERS, rows),
    )
    execute(url, "VACUUM ANALYZE todos")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.use_repo(args.repo)
    from worker import client

    tag = time.strftime("%H%M%S")
    server = common.Server(args.admin_url)
    failures: list[str] = []
    runs: list[dict[str, float]] = []
    stack = contextlib.ExitStack()
    stack.enter_context(common.bench_redis(args, prefer=10))
    log(f"update bench: {args.rows:,} rows, batches of {args.batch_size:,}, {args.runs} run(s), "
        f"-c {args.concurrency}; Redis {args.redis_url}")
    try:
        template = f"bench_upd_tpl_{tag}"
        fill(server.migrated(template), args.rows)
        for run in range(1, args.runs + 1):
            result: dict[str, float] = {}
            raw_db, work_db = f"bench_upd_raw_{tag}", f"bench_upd_work_{tag}"
            raw_url, work_url = server.create(raw_db, template), server.create(work_db, template)

            def phase_raw() -> None:
                server.checkpoint()
                started = time.perf_counter()
                execute(raw_url, "UPDATE todos SET status = 'completed' WHERE status = 'active'")
                result["raw_s"] = time.perf_counter() - started
                log(f"run {run}: raw UPDATE {result['raw_s']:.2f} s, {args.rows / result['raw_s']:,.0f} rows/s")

            def phase_worker() -> None:
                env = common.point_at(work_url, args.redis_url, args.work_dir, args.chunk_size)
                env["BULKOPS_UPDATE_BATCH_SIZE"] = str(args.batch_size)
                with common.celery_worker(env, args.work_dir / "logs-update", f"bench-upd-{tag}", args.concurrency):
                    server.checkpoint()
                    summary, wall = common.run_job(lambda: client.submit_update_status("completed", ["active"]))
                common.release_engine()
                result["worker_s"], result["longest_batch_s"] = wall, summary.longest_batch_s or 0.0
                log(f"run {run}: worker {wall:.2f} s, {args.rows / wall:,.0f} rows/s, {summary.chunks_total} "
                    f"batches, longest {result['longest_batch_s']:.3f} s; {summary.state} "
                    f"updated={summary.rows_updated:,}")
                if summary.state != "succeeded" or summary.rows_updated != args.rows:
                    failures.append(f"run {run}: job {summary.id} {summary.state}, updated "
                                    f"{summary.rows_updated} of {args.rows}, error {summary.error}")
                left = common.query(work_url, "SELECT count(*) FROM todos WHERE status = 'active'")[0][0]
                if left:
                    failures.append(f"run {run}: {left} todos still active")

            for phase in ((phase_raw, phase_worker) if run % 2 else (phase_worker, phase_raw)):
                phase()
            server.drop(raw_db)
            server.drop(work_db)
            runs.append(result)
    finally:
        common.release_engine()
        if not args.keep:
            server.drop_all()
        stack.close()

    n = args.rows
    ratios = [r["raw_s"] / r["worker_s"] for r in runs]
    print()
    print(common.table(
        ["run", "raw s", "raw rows/s", "worker s", "worker rows/s", "x raw", "longest batch s"],
        [[i + 1, r["raw_s"], n / r["raw_s"], r["worker_s"], n / r["worker_s"], r["raw_s"] / r["worker_s"],
          r["longest_batch_s"]] for i, r in enumerate(runs)],
    ))
    longest = max(r["longest_batch_s"] for r in runs)
    print(f"\nmedian ratio worker/raw rows/s: {median(ratios):.2f} (target >= {TARGET_RATIO}: "
          f"{'met' if median(ratios) >= TARGET_RATIO else 'NOT met'}); longest batch transaction over all "
          f"runs {longest:.3f} s (target < 1 s: {'met' if longest < 1 else 'NOT met'})")
    if failures:
        print("\nCORRECTNESS FAILURES:", *failures, sep="\n  ")
        return 1
    print("correctness: OK (every row updated exactly once, none left active)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
