"""Status-update benchmark: ``bulkops update-status`` vs one raw UPDATE and the seed document's
``query().update()`` (issue 14).

    python bench/update.py                          # 1,000,000 active todos, 3 runs
    python bench/update.py --rows 100000 --runs 1   # smoke run

Per run, each on a fresh clone of a template with 10,000 users and ``--rows`` active todos: the
raw ``UPDATE``, ``query().update()`` in this process, and ``--to completed --from active``
through a worker (keyset batches of ``--batch-size``). Every row updated once, none left active.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import harness
from harness import Bench, goal, log, median

FILL = ("INSERT INTO users (email, name) SELECT 'user' || g || '@example.com', 'User ' || g "
        "FROM generate_series(1, 10000) g",
        "INSERT INTO todos (title, status, owner_id, created_at) SELECT 'todo ' || g, 'active', "
        "1 + g % 10000, now() - make_interval(secs => g) FROM generate_series(1, {rows}) g")
LEFT = "SELECT count(*) FROM todos WHERE status = 'active'"
RAW = "UPDATE todos SET status = 'completed' WHERE status = 'active'"


def timed(fn: Any, *args: Any) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def orm_update(url: str) -> None:
    from sqlalchemy import create_engine
    from sqlalchemy.orm import Session
    from sqlalchemy.pool import NullPool

    from worker.models import Todo

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"), poolclass=NullPool)
    with Session(engine) as session:
        session.query(Todo).filter(Todo.status == "active").update(
            {"status": "completed"}, synchronize_session=False)
        session.commit()
    engine.dispose()


def main() -> int:
    p = harness.parser(__doc__)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--batch-size", type=int, default=10_000, help="BULKOPS_UPDATE_BATCH_SIZE")
    args = p.parse_args()
    failures: list[str] = []
    jobs: list[dict[str, Any]] = []

    def check(job: dict[str, Any], raw: str, url: str) -> list[str]:
        left = harness.query(url, LEFT)[0][0] + harness.query(raw, LEFT)[0][0]
        ok = job["state"] == "succeeded" and job["rows_updated"] == args.rows and not left
        return [] if ok else [f"job {job['state']}, updated {job['rows_updated']} of {args.rows}, "
                              f"{left} left active, error {job['error']}"]

    with Bench(args) as bench:
        template, tpl_url = bench.template()
        for sql in FILL:
            harness.query(tpl_url, sql.format(rows=args.rows))
        harness.query(tpl_url, "ANALYZE")
        for run in range(1, args.runs + 1):
            orm = bench.database("orm", template)
            orm_s = timed(orm_update, orm)
            if harness.query(orm, LEFT)[0][0]:
                failures.append(f"run {run}: query().update() left active rows")
            bench.drop(orm)
            job, fails = bench.race(template, "update", lambda u: timed(harness.query, u, RAW),
                                    ["update-status", "--to", "completed", "--from", "active"], args.rows, check,
                                    BULKOPS_UPDATE_BATCH_SIZE=args.batch_size)
            job["orm_s"] = orm_s
            log(f"run {run}: query().update() {orm_s:.2f} s")
            jobs.append(job)
            failures += fails
    orm_s = median([j["orm_s"] for j in jobs])
    return harness.report(
        f"update bench: {args.rows:,} rows, batches of {args.batch_size:,}, celery -c {args.concurrency}; "
        "baseline: one raw UPDATE",
        [harness.runs_table(jobs)],
        [goal("update vs one raw UPDATE", median([j["x_base"] for j in jobs]), 0.7),
         goal("longest batch transaction", max(j["longest_batch_s"] or 0.0 for j in jobs), 1.0,
              lower_is_better=True, unit=" s"), *harness.health(jobs)],
        failures, [f"query().update(): {orm_s:.2f} s, {orm_s / median([j['s'] for j in jobs]):.2f}x the job's time "
                   "(median); it and the raw UPDATE hold every row lock in one transaction until commit"])


if __name__ == "__main__":
    sys.exit(main())
