"""Seed benchmark: ``bulkops seed`` vs raw ``psql \\copy`` of the same rows, and the seed
document's ORM inserts vs bulkops's COPY path (issue 14).

    python bench/seed.py                            # 10,000 users x 100 = 1,000,000 todos, 3 runs
    python bench/seed.py --todos 100000 --runs 1    # smoke run (--orm-rows 0: no ORM inserts)

Rows: the seeder's own (``worker.seeding.rows``). ORM: ``add_all``, ``bulk_save_objects`` (one
commit) and ``loader.load`` (a seed chunk's COPY, skip mode) in this process. See bench/README.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import exports
import harness
from harness import Bench, goal, log, median

USERS = "SELECT email || E'\\t' || name AS line FROM users"
TODOS = exports.TODO_LINES.format(ts=exports.CREATED)
ORM = ("add_all", "bulk_save_objects", "loader.load")


def rows(table: str, args: argparse.Namespace, n: int) -> Iterator[tuple[Any, ...]]:
    """The example's first ``n`` rows of ``table`` as the seeder makes them; todos with owner ids 1..N."""
    from worker.seeding import SeedParams, rows
    from worker.targets import Registry, builtin_targets

    counts = SeedParams.example(args.users, args.todos_per_user, args.random_seed).counts(
        Registry(builtin_targets()))
    for lo in range(0, n, 10_000):
        for i, row in enumerate(rows(table, args.random_seed, counts, lo, min(lo + 10_000, n)), start=lo):
            yield row if table == "users" else (row[0], row[1], i // args.todos_per_user + 1, row[3])


def write(path: Path, data: Iterator[tuple[Any, ...]]) -> Path:
    with path.open("w") as f:
        f.writelines("\t".join(map(harness.tsv, row)) + "\n" for row in data)
    return path


def orm_insert(url: str, data: list[tuple[Any, ...]], how: str, chunk: int) -> float:
    """Seconds to insert ``data`` the way ``how`` says, in this process."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool
    from sqlmodel import Session

    from worker import loader, targets
    from worker.models import Todo

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"), poolclass=NullPool)
    started = time.perf_counter()
    for lo in range(0, len(data), chunk if how == "loader.load" else len(data)):
        with Session(engine) as session:
            if how == "loader.load":  # todos' TableSpec columns are exports.TODO_COLUMNS
                rows = list(enumerate(data[lo:lo + chunk], start=lo))
                loader.load(session, targets.get("todos").to_table_spec(), rows, {}, "skip", False)
            else:
                todos = [Todo(title=t, status=s, owner_id=o, created_at=c) for t, s, o, c in data]
                session.bulk_save_objects(todos) if how == "bulk_save_objects" else session.add_all(todos)
            session.commit()
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def main() -> int:
    p = harness.parser(__doc__)
    p.add_argument("--todos", type=int, default=1_000_000)
    p.add_argument("--todos-per-user", type=int, default=100)
    p.add_argument("--random-seed", type=int, default=7)
    p.add_argument("--orm-rows", type=int, default=100_000, help="todos for the ORM inserts (0: none)")
    args = p.parse_args()
    args.users = args.todos // args.todos_per_user
    n = args.users * args.todos_per_user
    orm_rows = min(args.orm_rows, n)
    failures: list[str] = []
    jobs: list[dict[str, Any]] = []
    orm: dict[str, list[float]] = {how: [] for how in ORM}

    def check(job: dict[str, Any], base: str, url: str) -> list[str]:
        fails = [f"seeded {what} differ from COPY's" for what, lines in (("users", USERS), ("todos", TODOS))
                 if harness.table_digest(url, lines) != harness.table_digest(base, lines)]
        if job["state"] != "succeeded" or job["rows_inserted"] != args.users + n or job["rows_rejected"]:
            fails.append(f"job {job['state']}, inserted {job['rows_inserted']} (want {args.users + n}), "
                         f"rejected {job['rows_rejected']}, error {job['error']}")
        return fails

    with Bench(args) as bench:
        template, _ = bench.template()
        users = write(args.work_dir / "seed-users.tsv", rows("users", args, args.users))
        todos = write(args.work_dir / "seed-todos.tsv", rows("todos", args, n))
        with_users = bench.database("users", template)  # the ORM inserts' template
        bench.copy(with_users, "users", ("email", "name"), users)
        data = list(rows("todos", args, orm_rows))

        def baseline(url: str) -> float:
            bench.copy(url, "users", ("email", "name"), users)
            return bench.copy(url, "todos", exports.TODO_COLUMNS, todos)

        for run in range(1, args.runs + 1):
            job, fails = bench.race(template, "seed", baseline, [
                "seed", "--users", str(args.users), "--todos-per-user", str(args.todos_per_user),
                "--random-seed", str(args.random_seed)], n, check)
            jobs.append(job)
            failures += fails
            digests = set()
            for how in ORM if orm_rows else ():
                url = bench.database("orm", harness.dbname(with_users))
                orm[how].append(orm_insert(url, data, how, args.chunk_size))
                digests.add(harness.table_digest(url, TODOS))
                bench.drop(url)
                log(f"run {run}: {how} {orm[how][-1]:.2f} s for {orm_rows:,} todos")
            if len(digests) > 1:
                failures.append(f"run {run}: the ORM inserts left different tables")
    ours = median(orm[ORM[-1]])
    return harness.report(
        f"seed bench: {args.users:,} users x {args.todos_per_user} = {n:,} todos, chunk {args.chunk_size:,}, "
        f"celery -c {args.concurrency}; baseline: psql \\copy of the todos (users loaded first, untimed)",
        [harness.runs_table(jobs),
         ([f"insert {orm_rows:,} todos, in this process", "median s", "rows/s", "x insert_new's time",
           "longest transaction s"],
          [[how, median(t), orm_rows / median(t), median(t) / ours,
            median(t) / (-(-orm_rows // args.chunk_size) if how == ORM[-1] else 1)] for how, t in orm.items() if t])],
        [goal("seed vs raw COPY", median([j["x_base"] for j in jobs]), 0.7), *harness.health(jobs)],
        failures, ["the job's time includes generating the rows and inserting the users; COPY's does not",
                   "insert_new's longest transaction: the mean per chunk"])


if __name__ == "__main__":
    sys.exit(main())
