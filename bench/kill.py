"""Kill bench (issue 8): SIGKILL the whole worker at random points of an import; it must stay exact.

    python bench/kill.py                           # 300,000 rows, 20 kills
    python bench/kill.py --rows 30000 --kills 3    # smoke run

One undisturbed run of a 1%-bad file, then per kill a fresh database, beat and a worker, SIGKILL to the
worker's process group, a new worker at once; exit 1 on any lost or doubled row or wrong reject set.
"""

from __future__ import annotations

import random
import signal
import sys
import time

import exports
import harness
from harness import NAN, goal, query


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
    rng = random.Random(args.seed)
    rows: list[list[object]] = []  # the report's, a row per kill
    resumes: list[float] = []
    recoveries: list[float] = []
    stuck = {"BULKOPS_STUCK_AFTER_S": args.stuck_after} if args.stuck_after else {}
    with harness.Bench(args, **stuck) as bench:
        template = exports.template(bench)
        ex = exports.generate(args.work_dir, "kill", args.rows, bad=0.01)
        harness.log(f"generated {args.rows:,} rows, {len(ex.rejected):,} expected rejects, "
                    f"chunk {args.chunk_size:,}")

        url = bench.database("kill", template)
        job = bench.run_job(url, "kill-undisturbed", "import", ex.csv.name)
        bench.failures += [f"undisturbed: {f}" for f in exports.check(url, job, ex)]
        rows.append(["-", "none", job["state"], job["s"], "-", "-", "WRONG" if bench.failures else "ok"])
        harness.log(f"undisturbed: {job['s']:.2f} s, {job['chunks_total']} chunks, {job['state']}")
        undisturbed, chunks = job["s"], int(job["chunks_total"] or 1)

        for k in range(1, args.kills + 1):
            url = bench.database("kill", template)
            bench.refresh()
            beat = bench.start(url, "beat", f"kill-beat-{k}")
            worker = bench.start(url, "worker", f"kill-worker-{k}")
            job_id = bench.submit(url, "import", ex.csv.name)
            if k % 2:  # odd kills after a random delay, even ones once a random number of chunks is done
                delay = rng.uniform(0, undisturbed)
                point = f"after {delay:.2f} s"
                time.sleep(delay)
            else:
                at = rng.randrange(chunks)
                point = f"at {at} chunks done"
                while query(url, "SELECT chunks_done < %s AND finished_at IS NULL FROM bulkops_ledger.jobs WHERE id = %s",
                            (at, job_id))[0][0]:
                    time.sleep(0.02)
            state, done, killed_at = query(url, "SELECT state, chunks_done, clock_timestamp() FROM bulkops_ledger.jobs"
                                           " WHERE id = %s", (job_id,))[0]
            bench.stop(worker, kill=True)
            killed = time.monotonic()
            point += f" (job {state}, {done} chunks done)"
            worker = bench.start(url, "worker", f"kill-worker-{k}b")
            try:
                job = bench.wait(url, job_id, timeout=args.timeout)
                recovery = time.monotonic() - killed
                fails = [f"kill {k} ({point}): {f}" for f in exports.check(url, job, ex)]
            except TimeoutError as exc:
                job, recovery, fails = {"state": "not finished", "s": NAN}, NAN, [f"kill {k} ({point}): {exc}"]
            bench.failures += fails
            # job_chunks.committed_at is its transaction's start: when the chunk began
            resumed = query(url, "SELECT extract(epoch FROM min(committed_at) - %s)::float FROM bulkops_ledger.job_chunks"
                            " WHERE job_id = %s AND committed_at > %s", (killed_at, job_id, killed_at))[0][0]
            resumed = NAN if resumed is None else resumed
            if state not in ("succeeded", "partially_succeeded", "failed"):  # the kill landed mid-job
                recoveries.append(recovery)
                if resumed == resumed:  # not NaN: some chunk was left to run
                    resumes.append(resumed)
            rows.append([k, point, job["state"], job["s"], resumed, recovery, "WRONG" if fails else "ok"])
            harness.log(f"kill {k} {point}: {job['state']} {recovery:.1f} s after the kill (resumed "
                        f"after {resumed:.1f} s); {fails or 'ok'}")
            for proc in (worker, beat):
                bench.stop(proc)
            bench.drop(url)

    goals = [goal(f"kill -> {what}, {how}", f(values), 30, lower_is_better=True, unit=" s")
             for what, values in (("work resumed", resumes), ("finished", recoveries))
             for how, f in (("median", harness.median), ("max", lambda v: max(v, default=NAN)))]
    return bench.report(
        f"kill bench: {args.rows:,} rows, chunk {args.chunk_size:,}, {args.kills} kills (SIGKILL to "
        f"the worker's process group), stuck after {args.stuck_after or 'default'} s", goals,
        tables=[(["kill", "point", "state", "job s", "kill->resumed s", "kill->finished s",
                  "table+rejects"], rows)])


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # clean up databases and processes
    sys.exit(main())
