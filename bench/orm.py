"""The seed document's bulk ORM calls vs bulkops's path, on the same rows (issue 14).

    python bench/orm.py                      # 100,000 todos, 3 runs
    python bench/orm.py --rows 20000 --runs 1

Insert (in this process, one fresh clone each, 10,000 users already there, the same
``worker.seeding.todo_rows``): the seed's ``session.add_all`` and
``session.bulk_save_objects`` (one commit) vs ``worker.bulkload.insert_new`` (COPY in a
savepoint, what a seed chunk runs; one transaction per ``--chunk-size`` rows).
Update (``--rows`` active todos -> completed): the seed's
``session.query(Todo).filter(...).update(..., synchronize_session=False)`` (one
statement, one transaction holding every row lock to its end) vs ``bulkops update-status``
through ``celery -A worker worker -c 2`` (keyset batches, transition rules, rejects).
Checks: every variant leaves the same table (md5) / every row updated once.
"""

from __future__ import annotations

import argparse
import sys
import time

import harness
from harness import Bench, log, median
from sqlalchemy import create_engine
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.pool import NullPool
from update import FILL


def rows(args: argparse.Namespace) -> list[tuple]:
    from worker.seeding import todo_rows

    per_user = max(1, args.rows // 10_000)
    out: list[tuple] = []
    for n in range(min(10_000, args.rows)):
        out.extend(todo_rows(args.random_seed, n, per_user, n + 1))
    return out[: args.rows]


def orm_insert(url: str, data: list[tuple], how: str) -> float:
    from worker.models import Todo

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"), poolclass=NullPool)
    started = time.perf_counter()
    with OrmSession(engine) as session:
        todos = [Todo(title=t, status=s, owner_id=o, created_at=c) for t, s, o, c in data]
        if how == "bulk_save_objects":
            session.bulk_save_objects(todos)
        else:
            session.add_all(todos)
        session.commit()
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def ours_insert(url: str, data: list[tuple], chunk: int) -> float:
    from sqlmodel import Session

    from worker import bulkload

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"), poolclass=NullPool)
    started = time.perf_counter()
    for lo in range(0, len(data), chunk):
        with Session(engine) as session:
            bulkload.insert_new(session, "todos", bulkload.TODO_COLUMNS, ("title", "owner_id"),
                                data[lo:lo + chunk])
            session.commit()
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def orm_update(url: str) -> float:
    from worker.models import Todo

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"), poolclass=NullPool)
    started = time.perf_counter()
    with OrmSession(engine) as session:
        session.query(Todo).filter(Todo.status == "active").update(
            {"status": "completed"}, synchronize_session=False)
        session.commit()
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--random-seed", type=int, default=7)
    harness.add_common_args(p)
    args = p.parse_args()
    failures: list[str] = []
    runs: list[list[object]] = []
    ratios: dict[str, list[float]] = {"add_all": [], "bulk_save_objects": [], "query().update()": []}
    data = rows(args)
    n = len(data)
    with Bench(args) as bench:
        template, tpl_url = bench.template()
        harness.query(tpl_url, FILL[0])
        for run in range(1, args.runs + 1):
            url = bench.database("ours", template)
            ours_s = ours_insert(url, data, args.chunk_size)
            want = harness.table_digest(url)
            bench.drop(url)
            for how in ("add_all", "bulk_save_objects"):
                url = bench.database("orm", template)
                orm_s = orm_insert(url, data, how)
                if harness.table_digest(url) != want:
                    failures.append(f"run {run}: {how} left another table than COPY")
                bench.drop(url)
                ratios[how].append(orm_s / ours_s)
                runs.append([run, f"insert: {how}", orm_s, n / orm_s, ours_s, n / ours_s, orm_s / ours_s, orm_s])
                log(f"run {run}: {how} {orm_s:.2f} s, bulkload COPY {ours_s:.2f} s")
            # update: the ORM's one statement vs the job's batches
            url = bench.database("upd", template)
            harness.query(url, FILL[1].format(rows=n))
            harness.query(url, "ANALYZE")
            orm_s = orm_update(url)
            if harness.query(url, "SELECT count(*) FROM todos WHERE status = 'active'")[0][0]:
                failures.append(f"run {run}: query().update() left active rows")
            bench.drop(url)
            url = bench.database("job", template)
            harness.query(url, FILL[1].format(rows=n))
            harness.query(url, "ANALYZE")
            with bench.worker(url, "orm-update") as w:
                job = bench.run_job(url, w, "update-status", "--to", "completed", "--from", "active")
            if job["state"] != "succeeded" or job["rows_updated"] != n:
                failures.append(f"run {run}: update job {job['state']}, updated {job['rows_updated']}")
            bench.drop(url)
            ratios["query().update()"].append(orm_s / job["s"])
            runs.append([run, "update: query().update()", orm_s, n / orm_s, job["s"], n / job["s"],
                         orm_s / job["s"], orm_s, job["longest_batch_s"] or 0.0])
            log(f"run {run}: query().update() {orm_s:.2f} s, update job {job['s']:.2f} s")
    for r in runs:
        r.extend([float("nan")] * (9 - len(r)))
        if r[1].startswith("insert"):
            r[8] = r[4] / -(-n // args.chunk_size)  # ours: one transaction per chunk (mean)
    return harness.report(
        f"seed ORM patterns vs bulkops: {n:,} todos, chunk {args.chunk_size:,}",
        (["run", "what", "seed s", "seed rows/s", "ours s", "ours rows/s", "seed s / ours s",
          "seed longest txn s", "ours longest txn s"], runs),
        [],
        failures,
        [f"medians, seed s / ours s: add_all {median(ratios['add_all']):.2f}x, bulk_save_objects "
         f"{median(ratios['bulk_save_objects']):.2f}x, query().update() "
         f"{median(ratios['query().update()']):.2f}x",
         "insert: both in this process, no Celery; ours = worker.bulkload.insert_new per chunk "
         "(a seed chunk's load)",
         "update: ours is the whole job through a worker (submit -> finished): batches, "
         "transition rules, rejects; the ORM's is one UPDATE holding every row lock until commit"])


if __name__ == "__main__":
    sys.exit(main())
