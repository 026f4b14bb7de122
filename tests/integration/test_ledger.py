"""The job ledger and the chunk runner on real PostgreSQL, without Celery.

A dummy operation inserts users, so every test can count exactly what was
written. Each users row carries a fresh nonce, so a chunk that ran twice
would leave twice the rows: the counts prove exactly-once.
"""

from __future__ import annotations

import gc
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from jobs_support import no_send
from sqlalchemy import text
from sqlmodel import Session

from worker import ledger, runner
from worker.db import session_scope
from worker.errors import BrokerUnavailable, DataError, JobNotFound, UsageError
from worker.ledger import ChunkCounts, RejectedRow
from worker.models import Job
from worker.runner import ChunkResult

pytestmark = pytest.mark.usefixtures("bulkops_env")

KIND = "seed"
MAX_ATTEMPTS = 3


class AddUsers:
    """A dummy bulk operation: chunk n inserts ``per_chunk`` new users."""

    kind = KIND

    def __init__(self, chunks: int = 3, per_chunk: int = 2, rejects: dict[int, int] | None = None):
        self.chunks, self.per_chunk, self.rejects = chunks, per_chunk, rejects or {}
        self.plans = 0
        self.calls: list[int] = []
        self.gc_enabled: list[bool] = []  # the cyclic collector's state, at each run_chunk
        # Set ``hold`` to make run_chunk stop mid-transaction until it is set again.
        self.hold: threading.Event | None = None
        self.entered = threading.Event()
        self.fail_once: set[int] = set()
        # Set ``plan_hold`` to make plan stop (after writing a user) until it is set.
        self.plan_hold: threading.Event | None = None
        self.planning = threading.Event()

    def plan(self, session: Session, job: Job, ready: runner.ReadyFn) -> list[dict[str, Any]]:
        self.plans += 1
        if self.plan_hold is not None:
            session.execute(
                text("INSERT INTO users (email, name) VALUES (:e, 'planned')"),
                {"e": f"plan-{job.id}-{self.plans}@example.com"},
            )
            self.planning.set()
            assert self.plan_hold.wait(120), "test never released the plan"
        return [{"n": n} for n in range(self.chunks)]

    def run_chunk(self, session: Session, job: Job, spec: dict[str, Any]) -> ChunkResult:
        n = int(spec["n"])
        self.calls.append(n)
        self.gc_enabled.append(gc.isenabled())
        nonce = uuid.uuid4().hex[:8]
        emails = [f"job{job.id}-c{n}-r{i}-{nonce}@example.com" for i in range(self.per_chunk)]
        session.execute(
            text("INSERT INTO users (email, name) VALUES (:e, :e)"), [{"e": e} for e in emails]
        )
        if self.hold is not None:
            self.entered.set()
            assert self.hold.wait(120), "test never released the chunk"
        if n in self.fail_once:
            self.fail_once.discard(n)
            raise RuntimeError(f"worker died in chunk {n}")
        rejected = self.rejects.get(n, 0)
        rejects = [
            RejectedRow(line=n * 100 + i, column="email", reason="bad email", raw=f"x{i}")
            for i in range(rejected)
        ]
        counts = ChunkCounts(
            read=self.per_chunk + rejected, inserted=self.per_chunk, rejected=rejected
        )
        return ChunkResult(counts, rejects)


# --- helpers ---------------------------------------------------------------------


def job_row(job_id: int) -> Job:
    with session_scope() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job


def scalar(sql: str, **params: Any) -> Any:
    with session_scope() as s:
        return s.execute(text(sql), params).scalar()


def users_count() -> int:
    return int(scalar("SELECT count(*) FROM users"))


def started_job(op: AddUsers) -> tuple[int, list[tuple[int, int]]]:
    """A submitted and planned job (state running); returns its id and what was enqueued."""
    job_id = ledger.submit(op.kind, {"test": True}, no_send)
    enqueued: list[tuple[int, int]] = []
    runner.start_job(job_id, op, lambda j, c: enqueued.append((j, c)))
    return job_id, enqueued


def age_heartbeat(job_id: int, seconds: int = 3600) -> None:
    with session_scope() as s:
        s.execute(
            text(
                "UPDATE bulkops_ledger.jobs SET heartbeat_at = now() - make_interval(secs => :s) "
                "WHERE id = :id"
            ),
            {"id": job_id, "s": seconds},
        )


def wait_for_lock_waiter(thread: threading.Thread) -> None:
    """Return once another backend of this database waits on a lock (or the thread ended)."""
    for _ in range(6000):  # a hang guard, not a timing assertion
        waiting = scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        if waiting or not thread.is_alive():
            return
        time.sleep(0.01)
    raise AssertionError("the second transaction never waited on the lock")


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # reported by the test
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, out


# --- submit ------------------------------------------------------------------------


def test_submit_commits_a_queued_row_before_sending() -> None:
    sent: list[tuple[int, str, str]] = []

    def send(job_id: int, task_id: str) -> None:
        # The worker may receive the message at once: the row must already be visible.
        state = scalar("SELECT state FROM bulkops_ledger.jobs WHERE id = :id", id=job_id)
        sent.append((job_id, task_id, state))

    job_id = ledger.submit(KIND, {"users": 3}, send)

    assert len(sent) == 1
    sent_id, task_id, state_at_send = sent[0]
    assert (sent_id, state_at_send) == (job_id, "queued")
    uuid.UUID(task_id)  # a real Celery task id
    job = job_row(job_id)
    assert (job.kind, job.state, job.params) == (KIND, "queued", {"users": 3})
    assert job.celery_task_id == task_id
    assert job.idempotency_key is None
    assert (job.attempts, job.chunks_done, job.chunks_total) == (0, 0, None)
    assert job.created_at is not None and job.created_at.tzinfo is not None


def test_failed_send_leaves_no_job_row_and_the_key_can_be_used_again() -> None:
    def broken(job_id: int, task_id: str) -> None:
        raise BrokerUnavailable("Redis is down")

    # Given the broker refuses the message
    with pytest.raises(BrokerUnavailable):
        ledger.submit(KIND, {}, broken, key="nightly")
    # Then no job is left queued with no message behind it
    assert scalar("SELECT count(*) FROM bulkops_ledger.jobs") == 0
    # and the same submit, retried once Redis is back, goes through
    sends: list[int] = []
    job_id = ledger.submit(KIND, {}, lambda j, t: sends.append(j), key="nightly")
    assert sends == [job_id]
    assert scalar("SELECT count(*) FROM bulkops_ledger.jobs") == 1


def test_idempotency_key_returns_the_existing_job_without_sending() -> None:
    sends: list[int] = []

    def send(job_id: int, task_id: str) -> None:
        sends.append(job_id)

    first = ledger.submit(KIND, {"users": 1}, send, key="k-1")
    second = ledger.submit(KIND, {"users": 1}, send, key="k-1")
    assert second == first
    assert sends == [first]
    assert scalar("SELECT count(*) FROM bulkops_ledger.jobs") == 1
    # a different key, or no key, is a new job
    third = ledger.submit(KIND, {"users": 1}, send, key="k-2")
    fourth = ledger.submit(KIND, {"users": 1}, send)
    fifth = ledger.submit(KIND, {"users": 1}, send)
    assert len({first, third, fourth, fifth}) == 4
    assert sends == [first, third, fourth, fifth]


def test_idempotency_key_of_another_kind_is_a_usage_error() -> None:
    ledger.submit(KIND, {}, no_send, key="shared")
    with pytest.raises(UsageError) as info:
        ledger.submit("import", {}, no_send, key="shared")
    assert "shared" in info.value.message
    assert scalar("SELECT count(*) FROM bulkops_ledger.jobs") == 1


def test_same_key_with_other_parameters_is_refused_naming_the_job() -> None:
    first = ledger.submit(KIND, {"users": 1}, no_send, key="seed-key")
    # When the same key comes with other parameters
    with pytest.raises(UsageError) as info:
        ledger.submit(KIND, {"users": 2}, no_send, key="seed-key")
    # Then it is refused, naming the existing job and what differs
    assert f"job {first}" in info.value.message and "users" in info.value.message
    # while the same parameters (in any key order) still return the job
    assert ledger.submit(KIND, {"users": 1}, no_send, key="seed-key") == first
    assert scalar("SELECT count(*) FROM bulkops_ledger.jobs") == 1


def test_second_submit_of_a_key_waits_for_a_failing_send_and_never_gets_a_deleted_id() -> None:
    sending, fail_now = threading.Event(), threading.Event()

    def failing_send(job_id: int, task_id: str) -> None:
        sending.set()
        assert fail_now.wait(120)
        raise BrokerUnavailable("Redis is down")

    # Given a first submit of key "k" whose send is under way (and will fail)
    first, first_out = in_thread(lambda: ledger.submit(KIND, {}, failing_send, key="k"))
    assert sending.wait(120)
    # When a second submit of the same key comes meanwhile
    sends: list[int] = []
    second, second_out = in_thread(
        lambda: ledger.submit(KIND, {}, lambda j, t: sends.append(j), key="k")
    )
    wait_for_lock_waiter(second)
    assert second.is_alive(), second_out  # it waits for the first one's outcome
    fail_now.set()
    first.join(120)
    second.join(120)
    # Then the first failed and left no row, and the second got a job that exists and was sent
    assert isinstance(first_out.get("error"), BrokerUnavailable)
    job_id = second_out["result"]
    assert ledger.get_summary(job_id).state == "queued"
    assert sends == [job_id]
    assert scalar("SELECT count(*) FROM bulkops_ledger.jobs") == 1


# --- claim -------------------------------------------------------------------------


def test_claim_commits_on_its_own_before_the_plan() -> None:
    # Given a plan that takes long
    op = AddUsers(chunks=2)
    op.plan_hold = threading.Event()
    job_id = ledger.submit(KIND, {}, no_send)
    thread, out = in_thread(lambda: runner.start_job(job_id, op, lambda j, c: None))
    assert op.planning.wait(120)
    # Then, while it plans, the claim is already committed: running, one attempt
    job = job_row(job_id)
    assert (job.state, job.attempts, job.chunks_total) == ("running", 1, None)
    assert job.started_at is not None and job.heartbeat_at is not None
    # and nothing the plan wrote is visible yet (its own transaction)
    assert users_count() == 0
    op.plan_hold.set()
    thread.join(120)
    assert out == {"result": 2}
    assert users_count() == 1


def test_second_delivery_while_planning_does_nothing() -> None:
    op = AddUsers(chunks=2)
    op.plan_hold = threading.Event()
    job_id = ledger.submit(KIND, {}, no_send)
    enqueued: list[tuple[int, int]] = []
    first, first_out = in_thread(
        lambda: runner.start_job(job_id, op, lambda j, c: enqueued.append((j, c)))
    )
    assert op.planning.wait(120)
    # When a second delivery of the job arrives while the first plans (alive, holding its lock)
    assert runner.start_job(job_id, op, lambda j, c: enqueued.append((j, c))) == 0
    op.plan_hold.set()
    first.join(120)
    # Then it planned once, claimed once, and every chunk was sent once
    assert first_out == {"result": 2}
    assert op.plans == 1 and job_row(job_id).attempts == 1
    assert enqueued == [(job_id, 0), (job_id, 1)]


def test_cancel_and_recovery_do_not_wait_for_a_long_plan() -> None:
    from worker.recovery import recover_stuck_jobs

    op = AddUsers(chunks=2)
    op.plan_hold = threading.Event()
    job_id = ledger.submit(KIND, {}, no_send)
    enqueued: list[tuple[int, int]] = []
    thread, out = in_thread(
        lambda: runner.start_job(job_id, op, lambda j, c: enqueued.append((j, c)))
    )
    assert op.planning.wait(120)
    age_heartbeat(job_id)
    # When recovery runs while the plan is long under way (heartbeat an hour old)
    sent: list[Any] = []
    report = recover_stuck_jobs(300, MAX_ATTEMPTS, lambda *a: sent.append(a), None)
    # Then it returns at once and leaves the live planner alone
    assert (report.resent, report.failed, sent) == ([], [], [])
    # When the job is cancelled meanwhile, that returns at once too: cancelling
    assert ledger.cancel(job_id) == "cancelling"
    assert not ledger.get_summary(job_id).finished
    op.plan_hold.set()
    thread.join(120)
    # Then the plan keeps nothing, no chunk is sent, and the job ends cancelled
    assert "error" not in out, out
    assert enqueued == [] and users_count() == 0
    job = job_row(job_id)
    assert (job.state, job.chunks_done) == ("cancelled", 0)
    assert job.finished_at is not None


def test_a_planner_that_died_counts_its_attempt_and_a_poison_plan_fails() -> None:
    op = AddUsers(chunks=2)
    job_id = ledger.submit(KIND, {}, no_send)
    # Given planners that died after their claim (claimed, no lock held any more)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        claimed = ledger.claim(job_id, MAX_ATTEMPTS)
        assert claimed is not None and claimed.attempts == attempt
    # When the job is delivered once more
    enqueued: list[tuple[int, int]] = []
    assert runner.start_job(job_id, op, lambda j, c: enqueued.append((j, c))) == 0
    # Then it fails, saying why, instead of being planned forever
    job = job_row(job_id)
    assert job.state == "failed" and op.plans == 0 and enqueued == []
    assert job.error is not None and "planned 3 times" in job.error


def test_a_plan_that_raises_is_queued_again_without_counting_an_attempt() -> None:
    class Broken(AddUsers):
        def plan(self, session: Session, job: Job, ready: runner.ReadyFn) -> list[dict[str, Any]]:
            session.execute(text("INSERT INTO users (email, name) VALUES ('x@example.com', 'x')"))
            raise BrokerUnavailable("Redis went away")

    job_id = ledger.submit(KIND, {}, no_send)
    with pytest.raises(BrokerUnavailable):
        runner.start_job(job_id, Broken(), lambda j, c: None)
    job = job_row(job_id)
    assert (job.state, job.attempts, job.chunks_total) == ("queued", 0, None)
    assert users_count() == 0  # the plan's transaction rolled back
    # and the next delivery plans it
    assert runner.start_job(job_id, AddUsers(chunks=2), lambda j, c: None) == 2


def test_broker_lost_mid_fan_out_resumes_with_the_stored_plan_and_nothing_doubled() -> None:
    from kombu.exceptions import OperationalError

    op = AddUsers(chunks=4)
    job_id = ledger.submit(KIND, {}, no_send)
    sent: list[int] = []

    def flaky(j: int, c: int) -> None:
        if c == 2:
            raise BrokerUnavailable("Redis unreachable") from OperationalError("down")
        sent.append(c)

    # Given Redis goes away after two chunks were sent
    with pytest.raises(BrokerUnavailable):
        runner.start_job(job_id, op, flaky)
    # Then the job is queued again: a chunk sent before does nothing meanwhile
    assert job_row(job_id).state == "queued"
    assert runner.run_chunk(job_id, 0, op).ran is False
    # When the job is delivered again once Redis is back
    again: list[int] = []
    assert runner.start_job(job_id, op, lambda j, c: again.append(c)) == 4
    # Then the stored plan is reused and every chunk not committed is sent
    assert op.plans == 1 and sent == [0, 1] and again == [0, 1, 2, 3]
    for n in again:
        runner.run_chunk(job_id, n, op)
    job = job_row(job_id)
    assert (job.state, job.chunks_done, job.rows_inserted) == ("succeeded", 4, 8)
    assert users_count() == 8


@pytest.mark.parametrize("state", ["succeeded", "failed", "cancelled", "partially_succeeded"])
def test_finished_job_cannot_be_claimed(state: str) -> None:
    job_id = ledger.submit(KIND, {}, no_send)
    with session_scope() as s:
        s.execute(
            text("UPDATE bulkops_ledger.jobs SET state = :st WHERE id = :id"),
            {"st": state, "id": job_id},
        )
    assert ledger.claim(job_id, MAX_ATTEMPTS) is None
    assert job_row(job_id).state == state


# --- start_job -----------------------------------------------------------------------


def test_start_job_plans_once_and_enqueues_every_chunk() -> None:
    op = AddUsers(chunks=3)
    job_id, enqueued = started_job(op)
    assert enqueued == [(job_id, 0), (job_id, 1), (job_id, 2)]
    job = job_row(job_id)
    assert (job.state, job.chunks_total, job.chunks_done, job.attempts) == ("running", 3, 0, 1)
    assert job.params["chunks"] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert job.params["test"] is True
    # A duplicate delivery while the job runs does nothing
    again: list[tuple[int, int]] = []
    assert runner.start_job(job_id, op, lambda j, c: again.append((j, c))) == 0
    assert again == []
    assert op.plans == 1


def test_restarted_job_enqueues_only_the_chunks_not_committed() -> None:
    # Given a job whose chunk 1 committed before its worker died
    op = AddUsers(chunks=3)
    job_id, _ = started_job(op)
    runner.run_chunk(job_id, 1, op)
    age_heartbeat(job_id)
    assert runner.start_job(job_id, op, lambda j, c: None) == 0  # a mere duplicate
    with session_scope() as s:  # recovery found it stuck and re-sent it
        s.execute(
            text("UPDATE bulkops_ledger.jobs SET resent_at = now() WHERE id = :id"), {"id": job_id}
        )
    # When the job is started again (recovery re-sent it)
    enqueued: list[tuple[int, int]] = []
    assert runner.start_job(job_id, op, lambda j, c: enqueued.append((j, c))) == 2
    # Then only the missing chunks go out again, and the stored plan is reused
    assert enqueued == [(job_id, 0), (job_id, 2)]
    assert op.plans == 1
    assert job_row(job_id).attempts == 1  # resuming a planned job is not a new attempt


def test_job_with_no_chunks_finishes_at_start() -> None:
    op = AddUsers(chunks=0)
    job_id, enqueued = started_job(op)
    assert enqueued == []
    job = job_row(job_id)
    assert (job.state, job.chunks_total, job.chunks_done) == ("succeeded", 0, 0)
    assert job.finished_at is not None


# --- run_chunk: exactly once ------------------------------------------------------------


def test_same_chunk_twice_inserts_and_counts_once() -> None:
    op = AddUsers(chunks=3, per_chunk=2)
    job_id, _ = started_job(op)
    first = runner.run_chunk(job_id, 0, op, worker="w1")
    second = runner.run_chunk(job_id, 0, op, worker="w2")
    assert (first.ran, first.chunks_done, first.chunks_total) == (True, 1, 3)
    assert second.ran is False
    assert op.calls == [0]
    assert users_count() == 2
    job = job_row(job_id)
    assert (job.rows_read, job.rows_inserted, job.chunks_done) == (2, 2, 1)
    rows = scalar("SELECT count(*) FROM bulkops_ledger.job_chunks WHERE job_id = :id", id=job_id)
    assert rows == 1
    assert (
        scalar("SELECT worker FROM bulkops_ledger.job_chunks WHERE job_id = :id", id=job_id) == "w1"
    )


def test_concurrent_duplicate_chunk_leaves_it_to_the_live_holder() -> None:
    op = AddUsers(chunks=2, per_chunk=3)
    job_id, _ = started_job(op)
    op.hold = threading.Event()
    # Given one delivery of chunk 0 is mid-transaction (rows inserted, not committed)
    first, first_out = in_thread(lambda: runner.run_chunk(job_id, 0, op, worker="a"))
    assert op.entered.wait(120)
    # When a second delivery of chunk 0 runs at the same time
    second = runner.run_chunk(job_id, 0, op, worker="b")
    # Then it sees the live holder (its lock) and does nothing, not even count a start
    assert second.ran is False
    assert op.calls == [0]
    assert (
        scalar(
            "SELECT unfinished FROM bulkops_ledger.job_chunk_starts WHERE job_id = :id", id=job_id
        )
        == 1
    )
    op.hold.set()
    first.join(120)
    assert "error" not in first_out, first_out
    assert first_out["result"].ran is True
    assert users_count() == 3
    job = job_row(job_id)
    assert (job.rows_read, job.rows_inserted, job.chunks_done, job.state) == (3, 3, 1, "running")


def test_chunk_that_crashed_is_run_again_and_counted_once() -> None:
    # Given a chunk whose first run dies after inserting its rows
    op = AddUsers(chunks=2, per_chunk=4)
    op.fail_once = {1}
    job_id, _ = started_job(op)
    with pytest.raises(RuntimeError):
        runner.run_chunk(job_id, 1, op)
    # Then nothing of it stays: no rows, no chunk row, no counters
    assert users_count() == 0
    assert scalar("SELECT count(*) FROM bulkops_ledger.job_chunks") == 0
    assert job_row(job_id).chunks_done == 0
    # When it is delivered again, it runs and is counted once
    assert runner.run_chunk(job_id, 1, op).ran is True
    assert runner.run_chunk(job_id, 1, op).ran is False
    assert users_count() == 4
    job = job_row(job_id)
    assert (job.rows_inserted, job.chunks_done) == (4, 1)


def test_the_cyclic_collector_is_paused_while_a_chunk_runs_and_back_after_a_crash() -> None:
    # Given a job whose chunk 1 dies once
    op = AddUsers(chunks=2, per_chunk=2)
    op.fail_once = {1}
    job_id, _ = started_job(op)
    assert gc.isenabled()
    # When chunk 0 runs, chunk 1 crashes, then runs again
    runner.run_chunk(job_id, 0, op)
    with pytest.raises(RuntimeError):
        runner.run_chunk(job_id, 1, op)
    # Then the collector was off inside every run and is on again after each, the crash too
    assert gc.isenabled()
    runner.run_chunk(job_id, 1, op)
    assert op.gc_enabled == [False, False, False]
    assert gc.isenabled()
    # And a caller that had it off keeps it off
    gc.disable()
    try:
        with runner.cyclic_gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


# --- finishing -------------------------------------------------------------------------


def test_last_chunk_finishes_the_job_in_any_order() -> None:
    op = AddUsers(chunks=3, per_chunk=2)
    job_id, _ = started_job(op)
    outcomes = [runner.run_chunk(job_id, n, op) for n in (2, 0)]
    assert [o.state for o in outcomes] == ["running", "running"]
    middle = job_row(job_id)
    assert (middle.state, middle.finished_at, middle.chunks_done) == ("running", None, 2)

    last = runner.run_chunk(job_id, 1, op)

    assert (last.ran, last.chunks_done, last.chunks_total, last.state) == (True, 3, 3, "succeeded")
    job = job_row(job_id)
    assert job.state == "succeeded"
    assert job.finished_at is not None and job.started_at is not None
    assert job.finished_at >= job.started_at
    assert (job.rows_read, job.rows_inserted, job.rows_rejected, job.chunks_done) == (6, 6, 0, 3)
    assert users_count() == 6
    summary = ledger.get_summary(job_id)
    assert summary.finished and summary.error is None
    assert summary.elapsed_s is not None and summary.elapsed_s >= 0
    # a late duplicate of a finished job's chunk does nothing
    assert runner.run_chunk(job_id, 1, op).ran is False
    assert users_count() == 6


@pytest.mark.parametrize("chunk_with_rejects", [0, 1])
def test_rejects_make_the_job_partially_succeeded(chunk_with_rejects: int) -> None:
    # Given rejects in the first or in the last chunk to finish
    op = AddUsers(chunks=2, per_chunk=2, rejects={chunk_with_rejects: 3})
    job_id, _ = started_job(op)
    runner.run_chunk(job_id, 0, op)
    # When the last chunk commits, the job is partially succeeded either way
    assert runner.run_chunk(job_id, 1, op).state == "partially_succeeded"
    job = job_row(job_id)
    assert (job.state, job.rows_read, job.rows_inserted, job.rows_rejected) == (
        "partially_succeeded",
        7,
        4,
        3,
    )
    assert job.finished_at is not None
    base = chunk_with_rejects * 100
    rejects = ledger.get_rejects(job_id)
    assert [(r.line, r.column, r.reason, r.raw) for r in rejects] == [
        (base, "email", "bad email", "x0"),
        (base + 1, "email", "bad email", "x1"),
        (base + 2, "email", "bad email", "x2"),
    ]
    chunk_nos = scalar(
        "SELECT array_agg(DISTINCT chunk_no) FROM bulkops_ledger.job_rejects WHERE job_id = :id",
        id=job_id,
    )
    assert chunk_nos == [chunk_with_rejects]


def test_a_reject_with_lone_surrogates_is_stored() -> None:
    op = AddUsers(chunks=1)
    job_id, _ = started_job(op)
    with session_scope() as s:
        ledger.add_rejects(
            s, job_id, 0, [RejectedRow(7, "title", "not storable: '\ud800'", '{"title": "\ud800"}')]
        )
    (r,) = ledger.get_rejects(job_id)
    assert (r.line, r.reason, r.raw) == (7, "not storable: '\ufffd'", '{"title": "\ufffd"}')


# --- cancel and fail ---------------------------------------------------------------------


def test_cancel_stops_later_chunks_and_keeps_committed_ones() -> None:
    op = AddUsers(chunks=3, per_chunk=2)
    job_id, _ = started_job(op)
    runner.run_chunk(job_id, 0, op)
    # When the job is cancelled after its first chunk
    assert ledger.cancel(job_id) == "cancelled"
    # Then later chunks do nothing ...
    later = [runner.run_chunk(job_id, n, op) for n in (1, 2)]
    assert [(o.ran, o.state) for o in later] == [(False, "cancelled"), (False, "cancelled")]
    assert op.calls == [0]
    # ... and the committed chunk's rows and counters stay
    assert users_count() == 2
    job = job_row(job_id)
    assert (job.state, job.rows_inserted, job.chunks_done) == ("cancelled", 2, 1)
    assert job.cancel_requested is True and job.finished_at is not None


def test_cancel_queued_job_means_it_never_starts() -> None:
    op = AddUsers(chunks=2)
    job_id = ledger.submit(KIND, {}, no_send)
    assert ledger.cancel(job_id) == "cancelled"
    enqueued: list[tuple[int, int]] = []
    assert runner.start_job(job_id, op, lambda j, c: enqueued.append((j, c))) == 0
    assert enqueued == [] and op.plans == 0
    assert job_row(job_id).attempts == 0


def test_cancel_while_a_chunk_runs_is_cancelling_until_that_chunk_ended() -> None:
    # Given a chunk mid-transaction when the operator cancels
    op = AddUsers(chunks=3, per_chunk=2)
    job_id, _ = started_job(op)
    op.hold = threading.Event()
    thread, out = in_thread(lambda: runner.run_chunk(job_id, 0, op))
    assert op.entered.wait(120)
    # Then the job is cancelling, not finished, while that chunk is in flight
    assert ledger.cancel(job_id) == "cancelling"
    during = ledger.get_summary(job_id)
    assert (during.state, during.finished, during.finished_at) == ("cancelling", False, None)
    # and a chunk that starts now does nothing
    other = AddUsers(chunks=3, per_chunk=2)
    assert runner.run_chunk(job_id, 1, other).ran is False and other.calls == []
    op.hold.set()
    thread.join(120)
    # When the in-flight chunk commits, it is counted and the job is cancelled,
    # with final counts that include it
    assert out["result"].ran is True
    job = job_row(job_id)
    assert (job.state, job.rows_inserted, job.chunks_done) == ("cancelled", 2, 1)
    assert job.finished_at is not None
    assert users_count() == 2
    op.hold = None
    assert runner.run_chunk(job_id, 2, op).ran is False
    assert job_row(job_id).rows_inserted == 2


def test_chunk_of_a_job_cancelled_before_it_was_in_flight_keeps_nothing() -> None:
    # Given a job cancelled (no chunk in flight: cancelled at once)
    op = AddUsers(chunks=2, per_chunk=2)
    job_id, _ = started_job(op)
    assert ledger.cancel(job_id) == "cancelled"
    # When a chunk's transaction reaches its commit anyway
    with session_scope() as s:
        assert ledger.record_chunk(s, job_id, ChunkCounts(read=2, inserted=2)) is None
    # Then the final counts do not change
    assert (job_row(job_id).rows_inserted, job_row(job_id).chunks_done) == (0, 0)


def test_cancel_finished_job_keeps_its_state_and_unknown_job_is_an_error() -> None:
    op = AddUsers(chunks=1)
    job_id, _ = started_job(op)
    runner.run_chunk(job_id, 0, op)
    assert ledger.cancel(job_id) == "succeeded"
    assert job_row(job_id).state == "succeeded"
    with pytest.raises(JobNotFound):
        ledger.cancel(job_id + 1000)


def test_fail_records_the_error() -> None:
    op = AddUsers(chunks=2)
    job_id, _ = started_job(op)
    ledger.fail(job_id, DataError("owner_email does not exist"))
    job = job_row(job_id)
    assert (job.state, job.error) == ("failed", "owner_email does not exist")
    assert job.finished_at is not None
    # later chunks of a failed job do nothing
    assert runner.run_chunk(job_id, 0, op).ran is False
    assert users_count() == 0
    assert ledger.get_summary(job_id).error == "owner_email does not exist"


def test_fail_queued_job_with_a_plain_exception() -> None:
    job_id = ledger.submit(KIND, {}, no_send)
    ledger.fail(job_id, RuntimeError("planner crashed"))
    assert (job_row(job_id).state, job_row(job_id).error) == ("failed", "planner crashed")


def test_fail_does_not_overwrite_a_finished_job() -> None:
    op = AddUsers(chunks=1)
    job_id, _ = started_job(op)
    runner.run_chunk(job_id, 0, op)
    ledger.fail(job_id, "too late")
    job = job_row(job_id)
    assert (job.state, job.error) == ("succeeded", None)


# --- updated_at trigger -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "update"),
    [
        ("users", "UPDATE users SET name = 'Renamed' WHERE id = :id"),
        ("todos", "UPDATE todos SET status = 'completed' WHERE id = :id"),
        (
            "bulkops_ledger.jobs",
            "UPDATE bulkops_ledger.jobs SET heartbeat_at = now() WHERE id = :id",
        ),
    ],
)
def test_updated_at_changes_on_every_update(table: str, update: str) -> None:
    # Given a row written in one transaction
    with session_scope() as s:
        owner = s.execute(
            text("INSERT INTO users (email, name) VALUES ('t@example.com', 'T') RETURNING id")
        ).scalar_one()
        todo = s.execute(
            text("INSERT INTO todos (title, owner_id) VALUES ('Write', :o) RETURNING id"),
            {"o": owner},
        ).scalar_one()
    row_id = {"users": owner, "todos": todo}.get(table) or ledger.submit(KIND, {}, no_send)
    created, before = stamps(table, row_id)
    assert before == created
    # When a plain SQL UPDATE (not the ORM) changes it in a later transaction
    with session_scope() as s:
        s.execute(text(update), {"id": row_id})
    # Then updated_at moved forward and created_at did not
    created_after, after = stamps(table, row_id)
    assert after > before
    assert created_after == created


def stamps(table: str, row_id: int) -> tuple[datetime, datetime]:
    with session_scope() as s:
        row = s.execute(
            text(f"SELECT created_at, updated_at FROM {table} WHERE id = :id"), {"id": row_id}
        ).one()
    assert row.updated_at.tzinfo is not None
    return row.created_at, row.updated_at
