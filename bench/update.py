"""Status update: ``bulkops update-status --to completed --from active`` vs one raw UPDATE and
(issue 14) the seed document's ``query().update()``, each on a fresh clone with ``--rows`` active
todos; every row updated once, none left active. Usage and goals: bench/README.md."""

from __future__ import annotations

import sys

import exports
import harness
from harness import goal, query
from sqlalchemy.orm import Session

from worker.models import Todo

FILL = """INSERT INTO todos (title, status, owner_id, created_at)
SELECT 'todo ' || g, 'active', 1 + g %% 10000, now() - make_interval(secs => g)
FROM generate_series(1, %s) g"""
LEFT = "SELECT count(*) FROM todos WHERE status = 'active'"
RAW = "UPDATE todos SET status = 'completed' WHERE status = 'active'"


def orm_update(url: str) -> None:
    """The seed document's bulk update: one statement, one transaction."""
    engine = harness.engine(url)
    with Session(engine) as session:
        active = session.query(Todo).filter(Todo.status == "active")
        active.update({"status": "completed"}, synchronize_session=False)
        session.commit()
    engine.dispose()


def main() -> int:
    p = harness.parser(__doc__)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--batch-size", type=int, default=10_000, help="BULKOPS_UPDATE_BATCH_SIZE")
    args = p.parse_args()
    def check(job: harness.Job, raw: str, url: str) -> list[str]:
        left = query(url, LEFT)[0][0] + query(raw, LEFT)[0][0]
        if job["state"] == "succeeded" and job["rows_updated"] == args.rows and not left:
            return []
        return [f"job {job['state']}, updated {job['rows_updated']} of {args.rows}, {left} left "
                f"active, error {job['error']}"]
    with harness.Bench(args, BULKOPS_UPDATE_BATCH_SIZE=args.batch_size) as bench:
        template = exports.template(bench)  # users 1..10,000
        query(template, FILL, (args.rows,))
        query(template, "ANALYZE")
        for run in range(1, args.runs + 1):
            url = bench.database("orm", template)
            orm_s = harness.timed(orm_update, url)
            if query(url, LEFT)[0][0]:
                bench.failures.append(f"run {run}: query().update() left active rows")
            bench.drop(url)
            harness.log(f"run {run}: query().update() {orm_s:.2f} s")
            argv = ["update-status", "--to", "completed", "--from", "active"]
            job = bench.race(template, "update", lambda u: harness.timed(query, u, RAW), argv,
                             args.rows, check)
            job["orm_s"] = orm_s
    orm_s, longest = bench.median("orm_s"), max(j["longest_batch_s"] or 0.0 for j in bench.jobs)
    return bench.report(
        f"update bench: {args.rows:,} rows, batches of {args.batch_size:,}, celery -c "
        f"{args.concurrency}; baseline: one raw UPDATE",
        [goal("update vs one raw UPDATE", bench.median("x_base"), ">=", 0.7),
         goal("longest batch transaction", longest, "<=", 1.0, " s")],
        [f"query().update(): {orm_s:.2f} s, {orm_s / bench.median('s'):.2f}x the job's time "
         "(median); it and the raw UPDATE hold every row lock in one transaction until commit"])


if __name__ == "__main__":
    sys.exit(main())
