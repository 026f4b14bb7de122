"""Seed benchmark: ``bulkops seed`` vs raw ``psql \\copy``, then (issue 14) the seed document's
``add_all``, ``bulk_save_objects`` and ``loader.load`` in this process on the seeder's own rows
(``--orm-rows 0``: none). Usage and goals: bench/README.md."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import exports
import harness
from harness import goal, median
from sqlmodel import Session

from worker import loader, seeding, targets
from worker.models import Todo

PER_USER, SEED = 100, 7  # todos per user, the seeder's --random-seed
LINES = {"users": "SELECT email || E'\\t' || name AS line FROM users", "todos": exports.TODO_LINES}
ORM = ("add_all", "bulk_save_objects", "loader.load")


def orm_insert(url: str, data: list[tuple[Any, ...]], how: str, chunk: int) -> None:
    """Insert ``data`` the way ``how`` says, in this process."""
    engine = harness.engine(url)
    for lo in range(0, len(data), chunk if how == "loader.load" else len(data)):
        with Session(engine) as session:
            if how == "loader.load":  # todos' TableSpec columns are exports.TODO_COLUMNS
                rows = list(enumerate(data[lo : lo + chunk], start=lo))
                loader.load(session, targets.get("todos").to_table_spec(), rows, {}, "skip", False)
            else:
                todos = [Todo(title=t, status=s, owner_id=o, created_at=c) for t, s, o, c in data]
                getattr(session, how)(todos)  # session.add_all or .bulk_save_objects
            session.commit()
    engine.dispose()


def main() -> int:
    p = harness.parser(__doc__)
    p.add_argument("--todos", type=int, default=1_000_000)
    p.add_argument("--orm-rows", type=int, default=100_000, help="for the ORM inserts (0: none)")
    args = p.parse_args()
    users = args.todos // PER_USER
    n, orm_rows = users * PER_USER, min(args.orm_rows, users * PER_USER)
    orm: dict[str, list[float]] = {how: [] for how in ORM}  # seconds per run
    registry = targets.Registry(targets.builtin_targets())
    counts = seeding.SeedParams.example(users, PER_USER, SEED).counts(registry)
    def rows(table: str, n: int) -> Iterator[tuple[Any, ...]]:
        """The first ``n`` rows of ``table`` as the seeder makes them; todos with owner ids 1..N."""
        for lo in range(0, n, 10_000):
            part = seeding.rows(table, SEED, counts, lo, min(lo + 10_000, n))
            for i, row in enumerate(part, start=lo):
                yield row if table == "users" else (row[0], row[1], i // PER_USER + 1, row[3])
    def check(job: harness.Job, base: str, url: str) -> list[str]:
        fails = [f"seeded {what} differ from COPY's" for what, lines in LINES.items()
                 if harness.table_digest(url, lines) != harness.table_digest(base, lines)]
        if job["state"] != "succeeded" or job["rows_inserted"] != users + n or job["rows_rejected"]:
            fails.append(f"job {job['state']}, inserted {job['rows_inserted']} (want {users + n}), "
                         f"rejected {job['rows_rejected']}, error {job['error']}")
        return fails
    def baseline(url: str) -> float:
        bench.copy(url, "users", ("email", "name"), users_tsv)
        return bench.copy(url, "todos", exports.TODO_COLUMNS, todos_tsv)
    with harness.Bench(args) as bench:
        template = bench.template()
        users_tsv = harness.write_tsv(args.work_dir / "seed-users.tsv", rows("users", users))
        todos_tsv = harness.write_tsv(args.work_dir / "seed-todos.tsv", rows("todos", n))
        with_users = bench.database("users", template)  # the ORM inserts' template
        bench.copy(with_users, "users", ("email", "name"), users_tsv)
        data = list(rows("todos", orm_rows))
        argv = ["seed", "--users", str(users), "--todos-per-user", str(PER_USER)]
        for run in range(1, args.runs + 1):
            bench.race(template, "seed", baseline, [*argv, "--random-seed", str(SEED)], n, check)
            digests = set()
            for how in ORM if orm_rows else ():
                url = bench.database("orm", with_users)
                orm[how].append(harness.timed(orm_insert, url, data, how, args.chunk_size))
                digests.add(harness.table_digest(url, exports.TODO_LINES))
                bench.drop(url)
                harness.log(f"run {run}: {how} {orm[how][-1]:.2f} s for {orm_rows:,} todos")
            if len(digests) > 1:
                bench.failures.append(f"run {run}: the ORM inserts left different tables")
    ours, chunks = median(orm["loader.load"]), -(-orm_rows // args.chunk_size)
    medians = {how: median(times) for how, times in orm.items() if times}
    inserts = [[how, s, orm_rows / s, s / ours, s / chunks if how == "loader.load" else s]
               for how, s in medians.items()]  # the last: the longest transaction
    bench.tables.append(([f"insert {orm_rows:,} todos, in this process", "median s", "rows/s",
                          "x loader.load's time", "longest transaction s"], inserts))
    return bench.report(
        f"seed bench: {users:,} users x {PER_USER} = {n:,} todos, chunk {args.chunk_size:,}, "
        f"celery -c {args.concurrency}; baseline: psql \\copy of the todos (users loaded first, "
        "untimed)", [goal("seed vs raw COPY", bench.median("x_base"), ">=", 0.7)],
        ["the job's time includes generating the rows and inserting the users; COPY's does not",
         "loader.load's longest transaction: the mean per chunk"])


if __name__ == "__main__":
    sys.exit(main())
