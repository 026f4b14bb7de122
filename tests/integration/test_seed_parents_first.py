"""Seeding's parents-first plan: children are sent once their parents committed."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from worker import db


def _count(table: str) -> int:
    with db.session_scope() as s:
        return int(s.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_children_are_sent_by_the_parents_last_chunk(bulkops_env: Any) -> None:
    from worker import ledger, runner
    from worker.seeding import SEED, ParentsNotSeeded

    # Given the example's seed job of 30 users x 70 todos, planned: users' chunk first
    job_id = ledger.submit(
        "seed", {"users": 30, "todos_per_user": 70, "random_seed": 7}, lambda j, t: None
    )
    sent: list[int] = []
    # Then only the users' chunk is sent; its commit sends the todos' chunks
    assert runner.start_job(job_id, SEED, lambda j, c: sent.append(c)) == 1
    assert sent == [0]
    # (a todos chunk that recovery sent early finds no parents: a transient error,
    # the task retries it with backoff, and it writes nothing)
    with pytest.raises(ParentsNotSeeded):
        runner.run_chunk(job_id, 2, SEED)
    assert (_count("users"), _count("todos")) == (0, 0)
    runner.run_chunk(job_id, 0, SEED, enqueue=lambda j, c: sent.append(c))
    assert sent == [0, 1, 2, 3] and (_count("users"), _count("todos")) == (30, 0)
    # And a second delivery of the users' chunk sends them again (its first run may
    # have died sending); running each once more is a no-op
    runner.run_chunk(job_id, 0, SEED, enqueue=lambda j, c: sent.append(c))
    assert sent == [0, 1, 2, 3, 1, 2, 3]
    for n in sent[1:]:
        runner.run_chunk(job_id, n, SEED, enqueue=lambda j, c: sent.append(c))
    s = ledger.get_summary(job_id)
    assert (s.state, s.rows_read, s.rows_inserted, s.chunks_done) == ("succeeded", 2130, 2130, 4)
