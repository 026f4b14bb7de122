"""Status-update benchmark: ``bulkops update-status`` through real workers vs one raw UPDATE.

    python bench/update.py                          # 1,000,000 active todos, 3 runs
    python bench/update.py --rows 100000 --runs 1   # smoke run

A template holds 10,000 users and ``--rows`` active todos. Per run, in two fresh clones:
``UPDATE todos SET status = 'completed' WHERE status = 'active'`` (one statement), and
``celery -A worker worker -c 2`` with ``bulkops update-status --to completed --from active``
(keyset batches of ``--batch-size``, one short transaction each), submit -> finished.
Checks: the job succeeded, updated every row once, and none is left active.
"""

from __future__ import annotations

import argparse
import sys
import time

import harness
from harness import Bench, goal, log, median

FILL = ("INSERT INTO users (email, name) SELECT 'user' || g || '@example.com', 'User ' || g "
        "FROM generate_series(1, 10000) g",
        "INSERT INTO todos (title, status, owner_id, created_at) SELECT 'todo ' || g, 'active', "
        "1 + g % 10000, now() - make_interval(secs => g) FROM generate_series(1, {rows}) g")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--batch-size", type=int, default=10_000, help="BULKOPS_UPDATE_BATCH_SIZE")
    harness.add_common_args(p)
    args = p.parse_args()
    failures: list[str] = []
    runs: list[list[object]] = []
    with Bench(args) as bench:
        template, tpl_url = bench.template()
        for sql in FILL:
            harness.query(tpl_url, sql.format(rows=args.rows))
        harness.query(tpl_url, "ANALYZE")
        for run in range(1, args.runs + 1):
            raw = bench.database("raw", template)
            started = time.perf_counter()
            harness.query(raw, "UPDATE todos SET status = 'completed' WHERE status = 'active'")
            raw_s = time.perf_counter() - started
            bench.drop(raw)
            url = bench.database("work", template)
            with bench.worker(url, "update", BULKOPS_UPDATE_BATCH_SIZE=args.batch_size) as w:
                job = bench.run_job(url, w, "update-status", "--to", "completed", "--from", "active")
            left = harness.query(url, "SELECT count(*) FROM todos WHERE status = 'active'")[0][0]
            if job["state"] != "succeeded" or job["rows_updated"] != args.rows or left:
                failures.append(f"run {run}: job {job['state']}, updated {job['rows_updated']} of "
                                f"{args.rows}, {left} left active, error {job['error']}")
            bench.drop(url)
            ratio = raw_s / job["s"]
            log(f"run {run}: worker {job['s']:.2f} s, raw {raw_s:.2f} s: {ratio:.2f}x")
            runs.append([run, raw_s, job["s"], args.rows / job["s"], ratio, job["longest_batch_s"] or 0.0,
                         job["redos"], job["rss_mb"]])
    return harness.report(
        f"update bench: {args.rows:,} rows, batches of {args.batch_size:,}, celery -c {args.concurrency}",
        (["run", "raw s", "worker s", "worker rows/s", "x raw", "longest batch s", "redos", "RSS MB"], runs),
        [goal("update vs one raw UPDATE", median([r[4] for r in runs]), 0.7),
         goal("longest batch transaction", max(r[5] for r in runs), 1.0, lower_is_better=True, unit=" s")],
        failures)


if __name__ == "__main__":
    sys.exit(main())
