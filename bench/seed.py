"""Benchmark: seed todos through real Celery workers vs. raw ``psql \\copy`` of the same rows.

    . .venv/bin/activate
    python bench/seed.py                      # 1,000,000 todos (10,000 users x 100), 3 runs
    python bench/seed.py --todos 100000 --runs 1   # quick check

Each run, in fresh databases cloned from one migrated template:

* **worker**: ``celery -A worker worker -c 2`` (a real subprocess), then
  ``client.submit_seed(users, todos_per_user, seed)`` and the wall time from
  submit to the job's finish (the ledger polled every 50 ms). The job
  generates every user and todo itself (users in the plan, todos in chunk tasks).
* **copy**: the same users COPYed first (not timed), then the same todos
  (``worker.seeding.user_row/todo_rows``, written once to a TSV file) loaded
  with ``psql -c "\\copy todos(title,status,owner_id,created_at) from ..."``.

The two phases alternate their order from run to run and a CHECKPOINT
precedes each. Correctness (exit 1 if wrong): the job succeeded with the
exact counts, and the seeded tables equal the COPY ones (count and md5 of
every row, joined to the owner's email, in a fixed order). Speed is only
reported: the target is worker rows/s >= 0.7 x COPY rows/s.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import common
from common import log, median

TARGET_RATIO = 0.7

TODOS_CHECKSUM = """
SELECT count(*), md5(string_agg(
    u.email || E'\\t' || t.title || E'\\t' || t.status || E'\\t'
    || to_char(t.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
    E'\\n' ORDER BY u.email, t.title))
FROM todos t JOIN users u ON u.id = t.owner_id
"""
USERS_CHECKSUM = """
SELECT count(*), md5(string_agg(email || E'\\t' || name, E'\\n' ORDER BY email)) FROM users
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--todos", type=int, default=1_000_000, help="total todos (default 1,000,000)")
    p.add_argument("--todos-per-user", type=int, default=100)
    p.add_argument("--random-seed", type=int, default=7)
    common.common_args(p, redis_db=11)
    args = p.parse_args(argv)
    if args.todos % args.todos_per_user:
        p.error("--todos must be a multiple of --todos-per-user")
    args.users = args.todos // args.todos_per_user
    return args


def generate(args: argparse.Namespace) -> tuple[Path, Path]:
    """The users and todos TSV files (cached by parameters); owner ids are 1..users in order."""
    from worker.seeding import todo_rows, user_row

    args.work_dir.mkdir(parents=True, exist_ok=True)
    stem = f"seed-{args.users}x{args.todos_per_user}-s{args.random_seed}"
    users_path = args.work_dir / f"{stem}-users.tsv"
    todos_path = args.work_dir / f"{stem}-todos.tsv"
    if not users_path.exists():
        common.write_tsv(users_path, (user_row(args.random_seed, n) for n in range(args.users)))
    if not todos_path.exists():
        started = time.perf_counter()

        def rows():  # type: ignore[no-untyped-def]
            for n in range(args.users):
                yield from todo_rows(args.random_seed, n, args.todos_per_user, n + 1)

        count = common.write_tsv(todos_path, rows())
        log(f"generated {count:,} todos in {time.perf_counter() - started:.1f} s -> {todos_path}")
    return users_path, todos_path


def checksums(url: str) -> tuple[tuple[int, str], tuple[int, str]]:
    users = common.query(url, USERS_CHECKSUM)[0]
    todos = common.query(url, TODOS_CHECKSUM)[0]
    return (int(users[0]), str(users[1])), (int(todos[0]), str(todos[1]))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    common.use_repo(args.repo)
    from worker import client

    tag = f"{time.strftime('%H%M%S')}"
    server = common.Server(args.admin_url)
    failures: list[str] = []
    runs: list[dict[str, float]] = []
    expected: tuple[tuple[int, str], tuple[int, str]] | None = None
    watch = common.CodeWatch()
    log(
        f"seed bench: {args.users:,} users x {args.todos_per_user} = {args.todos:,} todos, "
        f"{args.runs} run(s), chunk size {args.chunk_size}, -c {args.concurrency}; {common.machine_note()}"
    )
    stack = contextlib.ExitStack()
    stack.enter_context(common.bench_redis(args, prefer=11))
    log(f"Redis for the workers: {args.redis_url}")
    try:
        users_path, todos_path = generate(args)
        template = f"bench_seed_tpl_{tag}"
        server.migrated(template)
        dropped = common.purge_queues(args.redis_url)
        if dropped:
            log(f"dropped {dropped} stale message(s) from {args.redis_url}")
        for run in range(1, args.runs + 1):
            result: dict[str, float] = {}
            copy_db, worker_db = f"bench_seed_copy_{tag}", f"bench_seed_work_{tag}"
            copy_url = server.migrated(copy_db, template)
            worker_url = server.migrated(worker_db, template)
            common.copy_file(copy_url, "users", ("email", "name"), users_path)
            common.query(copy_url, "SELECT 1")  # connection sanity

            def phase_copy() -> None:
                server.checkpoint()
                log(f"run {run}: psql \\copy of {args.todos:,} todos ...")
                meter = common.CpuMeter(args.admin_url, copy_db)
                result["copy_s"] = common.copy_file(
                    copy_url,
                    "todos",
                    ("title", "status", "owner_id", "created_at"),
                    todos_path,
                    meter=meter,
                )
                cpu = meter.result(args.todos)
                result.update({f"copy_{k}": v for k, v in cpu.items()})
                log(
                    f"run {run}: copy {result['copy_s']:.2f} s, {args.todos / result['copy_s']:,.0f} rows/s; "
                    f"{common.cpu_note(cpu)}"
                )

            def phase_worker() -> None:
                watch.mark(f"run {run} worker")
                env = common.point_at(worker_url, args.redis_url, args.work_dir, args.chunk_size)
                with common.celery_worker(
                    env, args.work_dir / "logs-seed", f"bench-seed-{tag}", args.concurrency
                ) as worker:
                    server.checkpoint()
                    log(f"run {run}: worker seed of {args.todos:,} todos ...")
                    meter = common.CpuMeter(
                        args.admin_url, worker_db, lambda: [worker.proc.pid, *worker.pool_pids()]
                    )
                    summary, wall = common.run_job(
                        lambda: client.submit_seed(
                            args.users, args.todos_per_user, args.random_seed
                        ),
                        meter=meter,
                    )
                    rss = worker.rss()
                cpu = meter.result(args.todos)
                result.update({f"worker_{k}": v for k, v in cpu.items()})
                common.release_engine()
                result["worker_s"] = wall
                stats = common.job_stats(worker_url, summary.id)
                result["busy_s"] = stats["busy_s"]
                result["chunks"] = stats["chunks"]
                result["pool_rss_mb"] = rss.pool_peak_mb
                result["main_rss_mb"] = (rss.main_kb or 0) / 1024
                log(
                    f"run {run}: worker {wall:.2f} s ({stats['chunks']} chunks, {stats['busy_s']:.1f} s "
                    f"of chunk work, longest {stats['max_chunk_s']:.2f} s), "
                    f"{args.todos / wall:,.0f} todos/s; {summary.state} inserted={summary.rows_inserted:,}; "
                    f"pool peak RSS {rss.pool_peak_mb:.0f} MB; {common.cpu_note(cpu)}"
                )
                want_inserted = args.users + args.todos
                if (
                    summary.state != "succeeded"
                    or summary.rows_inserted != want_inserted
                    or summary.rows_rejected
                ):
                    failures.append(
                        f"run {run}: job {summary.id} {summary.state}, inserted {summary.rows_inserted} "
                        f"(want {want_inserted}), rejected {summary.rows_rejected}, error {summary.error}"
                    )

            for phase in (phase_copy, phase_worker) if run % 2 else (phase_worker, phase_copy):
                phase()

            log(f"run {run}: checking tables ...")
            if expected is None:
                expected = checksums(copy_url)
                if expected[1][0] != args.todos or expected[0][0] != args.users:
                    failures.append(
                        f"COPY baseline has {expected} rows, want {args.users}/{args.todos}"
                    )
            got = checksums(worker_url)
            if got != expected:
                failures.append(
                    f"run {run}: worker tables {got} differ from COPY tables {expected}"
                )
            else:
                log(
                    f"run {run}: worker tables equal the COPY tables ({got[1][0]:,} todos, md5 {got[1][1]})"
                )
            server.drop(copy_db)
            server.drop(worker_db)
            runs.append(result)
    finally:
        common.release_engine()
        if not args.keep:
            server.drop_all()
        stack.close()

    report(args, runs)
    print(watch.note())
    if failures:
        print("\nCORRECTNESS FAILURES:", *failures, sep="\n  ")
        return 1
    print(
        "\ncorrectness: OK (job succeeded with exact counts; tables equal COPY's, md5 of every row)"
    )
    return 0


def report(args: argparse.Namespace, runs: list[dict[str, float]]) -> None:
    n = args.todos
    copy_rate = [n / r["copy_s"] for r in runs if "copy_s" in r]
    work_rate = [n / r["worker_s"] for r in runs if "worker_s" in r]
    ratios = [
        (n / r["worker_s"]) / (n / r["copy_s"]) for r in runs if "copy_s" in r and "worker_s" in r
    ]
    print()
    print(
        f"seed bench: {args.users:,} users x {args.todos_per_user} = {n:,} todos; {len(runs)} run(s); "
        f"chunk {args.chunk_size:,} rows; celery -c {args.concurrency}; {common.machine_note()}"
    )
    print()
    print(
        common.table(
            [
                "run",
                "copy s",
                "copy rows/s",
                "worker s",
                "worker rows/s",
                "chunk work s",
                "ratio",
                "pool RSS MB",
            ],
            [
                [
                    i + 1,
                    r.get("copy_s", float("nan")),
                    n / r["copy_s"] if "copy_s" in r else float("nan"),
                    r.get("worker_s", float("nan")),
                    n / r["worker_s"] if "worker_s" in r else float("nan"),
                    r.get("busy_s", float("nan")),
                    (r["copy_s"] / r["worker_s"])
                    if "copy_s" in r and "worker_s" in r
                    else float("nan"),
                    r.get("pool_rss_mb", float("nan")),
                ]
                for i, r in enumerate(runs)
            ],
        )
    )
    print()
    rows = [
        [
            "raw psql \\copy (todos only)",
            median([r["copy_s"] for r in runs if "copy_s" in r]),
            median(copy_rate),
            1.0,
            "",
            "",
        ],
        [
            "worker seed, submit->finished",
            median([r["worker_s"] for r in runs if "worker_s" in r]),
            median(work_rate),
            median(ratios),
            f">= {TARGET_RATIO}",
            "yes" if median(ratios) >= TARGET_RATIO else "NO",
        ],
    ]
    print(common.table(["median of runs", "s", "rows/s", "x COPY", "target", "met"], rows))
    print(
        f"\nratio = worker todos/s / COPY todos/s in the same run (per run: "
        f"{', '.join(f'{x:.2f}' for x in ratios)}); ratio of medians "
        f"{median(work_rate) / median(copy_rate):.2f}. The worker's time includes generating the rows "
        f"and inserting the {args.users:,} users; COPY's does not."
    )
    print(
        f"chunk work = sum of job_chunks.elapsed_s (each chunk's work before its commit) over "
        f"{int(median([r.get('chunks', 0) for r in runs]))} chunks: median "
        f"{median([r['busy_s'] for r in runs if 'busy_s' in r]):.1f} s of "
        f"{args.concurrency} x {median([r['worker_s'] for r in runs if 'worker_s' in r]):.1f} s wall."
    )
    cpu_rows = []
    for key, name in (("copy", "raw COPY"), ("worker", "worker seed")):
        if any(f"{key}_pg_us_row" in r for r in runs):
            rs = [r for r in runs if f"{key}_pg_us_row" in r]
            cpu_rows.append(
                [
                    name,
                    median([r[f"{key}_python_us_row"] for r in rs]),
                    median([r[f"{key}_pg_us_row"] for r in rs]),
                    median([r[f"{key}_python_us_row"] + r[f"{key}_pg_us_row"] for r in rs]),
                    median([r[f"{key}_ours_cores"] for r in rs]),
                    median([r[f"{key}_machine_busy_cores"] for r in rs]),
                ]
            )
    if cpu_rows:
        print(
            "\nwhere the CPU went (medians; client = worker processes or psql; postgres = their backends):"
        )
        print(
            common.table(
                [
                    "phase",
                    "client us/row",
                    "postgres us/row",
                    "total us/row",
                    "our cores",
                    "machine busy cores",
                ],
                cpu_rows,
            )
        )
    print(
        f"worker pool peak RSS (VmHWM, max over processes): median "
        f"{median([r['pool_rss_mb'] for r in runs if 'pool_rss_mb' in r]):.0f} MB"
    )


if __name__ == "__main__":
    sys.exit(main())
