"""Kill bench (issue 8): one undisturbed import of a 1%-bad file, then per kill SIGKILL to the
worker's process group at a random point, a new worker at once; exit 1 on any lost or doubled row
or wrong rejects. Usage and goals: bench/README.md."""

from __future__ import annotations

import random
import sys
import time

import exports
import harness
from harness import NAN, goal, query

BEFORE = "SELECT chunks_done < %s AND finished_at IS NULL FROM bulkops_ledger.jobs WHERE id = %s"
KILLED = "SELECT state, chunks_done, clock_timestamp() FROM bulkops_ledger.jobs WHERE id = %s"
RESUMED = """SELECT coalesce(extract(epoch FROM min(committed_at) - %s)::float, 'NaN')
FROM bulkops_ledger.job_chunks WHERE job_id = %s AND committed_at > %s"""  # committed_at: the chunk's start
TABLE = ["kill", "point", "state", "job s", "kill->resumed s", "kill->finished s", "table+rejects"]


def main() -> int:
    p = harness.parser(__doc__, chunk_size=0)
    p.add_argument("--rows", type=int, default=300_000)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--stuck-after", type=float, help="BULKOPS_STUCK_AFTER_S (default: product's)")
    args = p.parse_args()
    args.chunk_size = args.chunk_size or max(1000, args.rows // 15)
    rng, rows = random.Random(1), []
    resumes: list[float] = []  # kill -> work resumed, of the kills that landed mid-job
    recoveries: list[float] = []  # kill -> finished
    stuck = {"BULKOPS_STUCK_AFTER_S": args.stuck_after} if args.stuck_after else {}
    def kill(k: int) -> None:
        """Kill ``k``: its report row; its times if it landed while the job ran."""
        url = bench.database("kill", template)
        bench.refresh()
        beat = bench.start(url, "beat", f"kill-beat-{k}")
        worker = bench.start(url, "worker", f"kill-worker-{k}")
        job_id = bench.submit(url, "import", ex.csv.name)
        if k % 2:  # odd kills after a random delay, even ones at a random number of chunks done
            delay = rng.uniform(0, undisturbed)
            point = f"after {delay:.2f} s"
            time.sleep(delay)
        else:
            at = rng.randrange(chunks)
            point = f"at {at} chunks done"
            while query(url, BEFORE, (at, job_id))[0][0]:
                time.sleep(0.02)
        state, done, killed_at = query(url, KILLED, (job_id,))[0]
        bench.stop(worker, kill=True)
        killed = time.monotonic()
        point += f" (job {state}, {done} chunks done)"
        worker = bench.start(url, "worker", f"kill-worker-{k}b")
        try:
            job: harness.Job = bench.wait(url, job_id, timeout=3600)
            recovery = time.monotonic() - killed
            fails = exports.check(url, job, ex)
        except TimeoutError as exc:
            job, recovery, fails = {"state": "not finished", "s": NAN}, NAN, [str(exc)]
        bench.failures += [f"kill {k} ({point}): {f}" for f in fails]
        resumed = query(url, RESUMED, (killed_at, job_id, killed_at))[0][0]  # NaN: none after
        if state not in ("succeeded", "partially_succeeded", "failed"):  # it landed mid-job
            recoveries.append(recovery)
            if resumed == resumed:  # not NaN: some chunk was left to run
                resumes.append(resumed)
        exact = "WRONG" if fails else "ok"
        rows.append([k, point, job["state"], job["s"], resumed, recovery, exact])
        harness.log("kill " + ", ".join(map(harness.cell, rows[-1])))  # failures: in the report
        for proc in (worker, beat):
            bench.stop(proc)
        bench.drop(url)
    with harness.Bench(args, **stuck) as bench:
        template = exports.template(bench)
        ex = exports.generate(args.work_dir, "kill", args.rows, bad=0.01)
        harness.log(f"generated {args.rows:,} rows, {len(ex.rejected):,} expected rejects")
        url = bench.database("kill", template)
        job = bench.run_job(url, "kill-undisturbed", "import", ex.csv.name)
        bench.failures += [f"undisturbed: {f}" for f in exports.check(url, job, ex)]
        exact = "WRONG" if bench.failures else "ok"
        rows.append(["-", "none", job["state"], job["s"], "-", "-", exact])
        harness.log(f"undisturbed: {job['s']:.2f} s, {job['chunks_total']} chunks, {job['state']}")
        undisturbed, chunks = job["s"], int(job["chunks_total"] or 1)
        for k in range(1, args.kills + 1):
            kill(k)
    goals: list[list[str]] = []
    for what, values in (("work resumed", resumes), ("finished", recoveries)):
        goals.append(goal(f"kill -> {what}, median", harness.median(values), "<=", 30, " s"))
        goals.append(goal(f"kill -> {what}, max", max(values, default=NAN), "<=", 30, " s"))
    bench.tables.append((TABLE, rows))
    return bench.report(
        f"kill bench: {args.rows:,} rows, chunk {args.chunk_size:,}, {args.kills} kills (SIGKILL "
        f"to the worker's process group), stuck after {args.stuck_after or 'default'} s", goals)


if __name__ == "__main__":
    sys.exit(main())
