"""Seed benchmark: ``bulkops seed`` through real workers vs raw ``psql \\copy`` of the same rows.

    python bench/seed.py                            # 10,000 users x 100 = 1,000,000 todos, 3 runs
    python bench/seed.py --todos 100000 --runs 1    # smoke run

Baseline: the same users (``worker.seeding.rows``, COPYed first, not timed) and todos
(the same generator, written once to a TSV) loaded with ``psql \\copy`` into a fresh
clone. Worker: a fresh clone, ``celery -A worker worker -c 2``, ``bulkops seed`` submit -> finished
(users included). Checks: the job succeeded with exact counts; both tables equal COPY's (md5).
"""

from __future__ import annotations

import argparse
import sys

import harness
from harness import Bench, goal, log, median

USERS_DIGEST = "SELECT count(*), md5(string_agg(email || E'\\t' || name, E'\\n' ORDER BY email COLLATE \"C\")) FROM users"


def write_rows(args: argparse.Namespace) -> tuple:
    """The example's rows as the generic seeder makes them (worker.seeding.rows), owner ids 1..N."""
    from worker.seeding import SeedParams, rows
    from worker.targets import Registry, builtin_targets

    counts = SeedParams.example(args.users, args.todos_per_user, args.random_seed).counts(
        Registry(builtin_targets()))
    users, todos = args.work_dir / "seed-users.tsv", args.work_dir / "seed-todos.tsv"
    step = 10_000
    with users.open("w") as u, todos.open("w") as t:
        for lo in range(0, args.users, step):
            for row in rows("users", args.random_seed, counts, lo, min(lo + step, args.users)):
                u.write("\t".join(map(harness.tsv, row)) + "\n")
        n = args.users * args.todos_per_user
        for lo in range(0, n, step):
            for i, (title, status, _, created) in enumerate(
                    rows("todos", args.random_seed, counts, lo, min(lo + step, n)), start=lo):
                owner_id = i // args.todos_per_user + 1
                t.write("\t".join(map(harness.tsv, (title, status, owner_id, created))) + "\n")
    return users, todos


def digests(url: str) -> tuple:
    return tuple(harness.query(url, USERS_DIGEST)[0]), harness.table_digest(url)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--todos", type=int, default=1_000_000)
    p.add_argument("--todos-per-user", type=int, default=100)
    p.add_argument("--random-seed", type=int, default=7)
    harness.add_common_args(p)
    args = p.parse_args()
    args.users = args.todos // args.todos_per_user
    n = args.users * args.todos_per_user
    failures: list[str] = []
    runs: list[list[object]] = []
    ratios: list[float] = []
    rss: list[float] = []
    with Bench(args) as bench:
        template, _ = bench.template()
        users_tsv, todos_tsv = write_rows(args)
        for run in range(1, args.runs + 1):
            base = bench.database("copy", template)
            bench.copy(base, "users", ("email", "name"), users_tsv)
            copy_s = bench.copy(base, "todos", ("title", "status", "owner_id", "created_at"), todos_tsv)
            want = digests(base)
            bench.drop(base)
            url = bench.database("work", template)
            with bench.worker(url, "seed") as w:
                job = bench.run_job(url, w, "seed", "--users", str(args.users), "--todos-per-user",
                                    str(args.todos_per_user), "--random-seed", str(args.random_seed))
            ratios.append((n / job["s"]) / (n / copy_s))
            rss.append(job["rss_mb"])
            log(f"run {run}: worker {job['s']:.2f} s, COPY {copy_s:.2f} s: {ratios[-1]:.2f}x; {job['state']}")
            if job["state"] != "succeeded" or job["rows_inserted"] != args.users + n or job["rows_rejected"]:
                failures.append(f"run {run}: job {job['state']}, inserted {job['rows_inserted']} "
                                f"(want {args.users + n}), rejected {job['rows_rejected']}, error {job['error']}")
            if digests(url) != want:
                failures.append(f"run {run}: seeded tables {digests(url)} differ from COPY's {want}")
            bench.drop(url)
            runs.append([run, copy_s, n / copy_s, job["s"], n / job["s"], ratios[-1], job["redos"], job["rss_mb"]])
    return harness.report(
        f"seed bench: {args.users:,} users x {args.todos_per_user} = {n:,} todos, chunk {args.chunk_size:,}, "
        f"celery -c {args.concurrency}",
        (["run", "COPY s", "COPY rows/s", "worker s", "worker rows/s", "x COPY", "redos", "RSS MB"], runs),
        [goal("seed vs raw COPY", median(ratios), 0.7),
         goal("worker peak RSS per process (max)", max(rss), 150, lower_is_better=True, unit=" MB")],
        failures, ["worker time includes generating the rows and inserting the users; COPY's does not"])


if __name__ == "__main__":
    sys.exit(main())
