"""Kill bench (issue 8): SIGKILL the whole worker at random points of an import, and check it is exact.

    python bench/kill.py                           # 300,000 rows, 20 kills
    python bench/kill.py --rows 30000 --kills 3    # smoke run

A 1%-bad file (bench/exports.py); one undisturbed run, then per kill a fresh database, beat and a
worker, SIGKILL to the worker's process group after a random delay or number of chunks, a new
worker at once. Reports kill -> work resumed and kill -> finished; exit 1 on any lost or doubled
row or a wrong reject set. See bench/README.md.
"""

from __future__ import annotations

import random
import signal
import sys
import time

import exports
import harness
from harness import Bench, goal, log, median


def main() -> int:
    p = harness.parser(__doc__, chunk_size=0)
    p.add_argument("--rows", type=int, default=300_000)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--stuck-after", type=float, default=None,
                   help="BULKOPS_STUCK_AFTER_S for worker and beat (default: the product's)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds to wait for a job after a kill")
    args = p.parse_args()
    args.chunk_size = args.chunk_size or max(1000, args.rows // 15)
    extra = {"BULKOPS_STUCK_AFTER_S": args.stuck_after} if args.stuck_after else {}
    rng = random.Random(args.seed)
    failures: list[str] = []
    rows: list[list[object]] = []
    recoveries: list[float] = []
    resumes: list[float] = []
    with Bench(args) as bench:
        template = exports.template(bench)
        ex = exports.generate(args.work_dir, "kill", args.rows, bad=0.01)
        log(f"generated {args.rows:,} rows, {len(ex.rejected):,} expected rejects, chunk {args.chunk_size:,}")

        url = bench.database("kill", template)
        job = bench.run_job(url, "kill-undisturbed", "import", ex.csv.name, **extra)
        undisturbed = job["s"]
        failures += [f"undisturbed: {f}" for f in exports.check(url, job, ex)]
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
            state = harness.query(url, "SELECT state, chunks_done, clock_timestamp() FROM jobs WHERE id = %s",
                                  (job_id,))[0]
            bench.stop(worker, kill=True)
            killed, killed_at = time.monotonic(), state[2]
            point += f" (job {state[0]}, {state[1]} chunks done)"
            worker = bench.start(url, "worker", f"kill-worker-{k}b", **extra)
            try:
                job = bench.wait(url, job_id, timeout=args.timeout)
                recovery = time.monotonic() - killed
            except TimeoutError as exc:
                job, recovery = {"state": "not finished"}, harness.NAN
                failures.append(f"kill {k} ({point}): {exc}")
            # job_chunks.committed_at is its transaction's start: when the chunk began
            resumed = harness.query(
                url, "SELECT extract(epoch FROM min(committed_at) - %s) FROM job_chunks "
                "WHERE job_id = %s AND committed_at > %s", (killed_at, job_id, killed_at))[0][0]
            resumed = harness.NAN if resumed is None else float(resumed)
            fails = [f"kill {k} ({point}): {f}" for f in exports.check(url, job, ex)] if "id" in job else []
            failures += fails
            if state[0] not in ("succeeded", "partially_succeeded", "failed"):
                recoveries.append(recovery)
                if resumed == resumed:  # not NaN: some chunk was left to run
                    resumes.append(resumed)
            rows.append([k, point, job["state"], float(job.get("s", harness.NAN)), resumed, recovery,
                         "ok" if not fails else "WRONG"])
            log(f"kill {k} {point}: {job['state']} {recovery:.1f} s after the kill (resumed after "
                f"{resumed:.1f} s); {'ok' if not fails else fails}")
            for proc in (worker, beat):
                bench.stop(proc)
            bench.drop(url)

    goals = [goal(f"kill -> {what}, {how}", f(values), 30, lower_is_better=True, unit=" s")
             for what, values in (("work resumed", resumes), ("finished", recoveries))
             for how, f in (("median", median), ("max", lambda v: max(v, default=harness.NAN)))]
    return harness.report(
        f"kill bench: {args.rows:,} rows, chunk {args.chunk_size:,}, {args.kills} kills (SIGKILL to the "
        f"worker's process group), stuck after {args.stuck_after or 'default'} s",
        [(["kill", "point", "state", "job s", "kill->resumed s", "kill->finished s", "table+rejects"], rows)],
        goals, failures)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # clean up databases and processes
    sys.exit(main())
