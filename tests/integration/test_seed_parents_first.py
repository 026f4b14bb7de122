"""Seeding's parents-first plan: a child chunk that runs before its parents is retried."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from worker import db


def _count(table: str) -> int:
    with db.session_scope() as s:
        return int(s.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_a_child_chunk_before_its_parents_is_retried_and_writes_nothing(bulkops_env: Any) -> None:
    from worker import ledger, runner
    from worker.seeding import SEED, ParentsNotSeeded

    # Given the example's seed job of 30 users x 70 todos, planned: users' chunk first
    job_id = ledger.submit(
        "seed", {"users": 30, "todos_per_user": 70, "random_seed": 7}, lambda j, t: None
    )
    sent: list[int] = []
    assert runner.start_job(job_id, SEED, lambda j, c: sent.append(c)) == 4
    assert sent == [0, 1, 2, 3]
    # When a todos chunk runs before the users' chunk committed, it raises a transient
    # error (the task retries it with backoff) and writes nothing
    with pytest.raises(ParentsNotSeeded):
        runner.run_chunk(job_id, 2, SEED)
    assert (_count("users"), _count("todos")) == (0, 0)
    # Then, once the parents are there, every chunk runs once and the counts are exact
    for n in sent:
        runner.run_chunk(job_id, n, SEED)
    s = ledger.get_summary(job_id)
    assert (s.state, s.rows_read, s.rows_inserted, s.chunks_done) == ("succeeded", 2130, 2130, 4)
