"""Kill bench (issue 8): SIGKILL the whole worker at random points of an import, and check it is exact.

    python bench/kill.py                           # 300,000 rows, 20 kills
    python bench/kill.py --rows 30000 --kills 3    # smoke run

The file has 1% bad rows of every kind (cross-chunk duplicates included; bench/exports.py).
One undisturbed run first, then per kill: a fresh database, ``celery -A worker beat`` and
``celery -A worker worker -c 2``, ``bulkops import``; the worker's process group gets SIGKILL
after a random delay (within the undisturbed run's duration) or once a random number of
chunks is done; a new worker starts at once, beat keeps running (recovery re-sends). The
final table and rejected lines must equal the sequential pass; the time from the kill to
the finished job is reported, and the time from the kill to the first chunk the new worker
started (and committed): "resumed", how long the dead worker's work stood still (issue 8: under
30 s). Exit 1 on any lost or doubled row or a wrong reject set.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import time

import exports
import harness
from harness import Bench, goal, log, median


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=300_000)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--stuck-after", type=float, default=None,
                   help="BULKOPS_STUCK_AFTER_S for worker and beat (default: the product's)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for a job after a kill")
    harness.add_common_args(p, chunk_size=0)
    args = p.parse_args()
    args.chunk_size = args.chunk_size or max(1000, args.rows // 15)
    extra = {"BULKOPS_STUCK_AFTER_S": args.stuck_after} if args.stuck_after else {}
    rng = random.Random(args.seed)
    failures: list[str] = []
    rows: list[list[object]] = []
    recoveries: list[float] = []
    resumes: list[float] = []
    with Bench(args) as bench:
        template, tpl_url = bench.template()
        bench.copy(tpl_url, "users", ("email", "name"), exports.users_tsv(args.work_dir / "users.tsv"))
        ex = exports.generate(args.work_dir, "kill", args.rows, bad=0.01)
        log(f"generated {args.rows:,} rows, {len(ex.rejected):,} expected rejects, chunk {args.chunk_size:,}")

        url = bench.database("kill", template)
        with bench.worker(url, "kill-undisturbed", **extra) as w:
            job = bench.run_job(url, w, "import", ex.csv.name)
        undisturbed = job["s"]
        failures += exports.check(url, job, ex, "undisturbed")
        rows.append(["-", "none", job["state"], job["s"], "-", "-", "ok" if not failures else "WRONG"])
        log(f"undisturbed: {job['s']:.2f} s, {job['chunks_total']} chunks, {job['state']}")
        chunks = int(job["chunks_total"] or 1)

        for k in range(1, args.kills + 1):
            url = bench.database("kill", template)
            bench.refresh()
            beat = bench.start(url, "beat", f"kill-beat-{k}", **extra)
            worker = bench.start(url, "worker", f"kill-worker-{k}", **extra)
            job_id = bench.submit(url, "import", ex.csv.name)
            if k % 2:
                delay = rng.uniform(0, undisturbed)
                point = f"after {delay:.2f} s"
                time.sleep(delay)
            else:
                at = rng.randrange(chunks)
                point = f"at {at} chunks done"
                while harness.query(url, "SELECT chunks_done < %s AND finished_at IS NULL FROM jobs "
                                    "WHERE id = %s", (at, job_id))[0][0]:
                    time.sleep(0.02)
            state = harness.query(url, "SELECT state, chunks_done FROM jobs WHERE id = %s", (job_id,))[0]
            bench.stop(worker, kill=True)
            killed = time.monotonic()
            killed_at = harness.query(url, "SELECT clock_timestamp()")[0][0]
            point += f" (job {state[0]}, {state[1]} chunks done)"
            worker = bench.start(url, "worker", f"kill-worker-{k}b", **extra)
            try:
                job = bench.wait(url, job_id, timeout=args.timeout)
                recovery = time.monotonic() - killed
            except TimeoutError as exc:
                job, recovery = {"state": "not finished"}, float("nan")
                failures.append(f"kill {k} ({point}): {exc}")
            # job_chunks.committed_at is its transaction's start: when the chunk began
            resumed = harness.query(
                url, "SELECT extract(epoch FROM min(committed_at) - %s) FROM job_chunks "
                "WHERE job_id = %s AND committed_at > %s", (killed_at, job_id, killed_at))[0][0]
            resumed = float("nan") if resumed is None else float(resumed)
            fails = exports.check(url, job, ex, f"kill {k} ({point})") if "id" in job else []
            failures += fails
            if state[0] not in ("succeeded", "partially_succeeded", "failed"):
                recoveries.append(recovery)
                if resumed == resumed:  # not NaN: some chunk was left to run
                    resumes.append(resumed)
            rows.append([k, point, job["state"], float(job.get("s", "nan")), resumed, recovery,
                         "ok" if not fails else "WRONG"])
            log(f"kill {k} {point}: {job['state']} {recovery:.1f} s after the kill (resumed after "
                f"{resumed:.1f} s); {'ok' if not fails else fails}")
            for proc in (worker, beat):
                bench.stop(proc)
            bench.drop(url)

    goals = [goal("kill -> work resumed, median", median(resumes), 30, lower_is_better=True, unit=" s"),
             goal("kill -> work resumed, max", max(resumes, default=float("nan")), 30,
                  lower_is_better=True, unit=" s"),
             goal("kill -> finished, median", median(recoveries), 30, lower_is_better=True, unit=" s"),
             goal("kill -> finished, max", max(recoveries, default=float("nan")), 30,
                  lower_is_better=True, unit=" s")]
    return harness.report(
        f"kill bench: {args.rows:,} rows, chunk {args.chunk_size:,}, {args.kills} kills (SIGKILL to the "
        f"worker's process group), stuck after {args.stuck_after or 'default'} s",
        (["kill", "point", "state", "job s", "kill->resumed s", "kill->finished s", "table+rejects"], rows),
        goals, failures)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # clean up databases and processes
    sys.exit(main())
