"""Reading jobs with their rejects takes a fixed number of queries (no N+1), sync and async."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from worker import aclient, db, ledger
from worker.ledger import RejectedRow
from worker.rejects_export import export_rejects

pytestmark = pytest.mark.integration


class Statements:
    """Counts the statements sent on the process's sync engine."""

    def __init__(self) -> None:
        self.count = 0
        self.seen: list[str] = []

    def reset(self) -> None:
        self.count, self.seen = 0, []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.count += 1
        self.seen.append(statement)


@pytest.fixture
def statements(bulkops_env: dict[str, str]) -> Iterator[Statements]:
    engine = db.get_engine()
    counter = Statements()
    event.listen(engine, "before_cursor_execute", counter)
    yield counter
    event.remove(engine, "before_cursor_execute", counter)


def job_with_rejects(n: int) -> int:
    job_id = ledger.submit("import", {"path": "x.csv", "format": "csv"}, lambda _j, _t: None)
    rows = [
        RejectedRow(line=i + 2, column="title", reason="empty", raw=",active,a@b.c")
        for i in range(n)
    ]
    with db.session_scope() as session:
        ledger.add_rejects(session, job_id, 0, rows)
    return job_id


@pytest.mark.parametrize("n", [1, 50])
def test_a_job_and_its_rejects_are_two_queries_whatever_their_number(
    statements: Statements, tmp_path: Path, n: int
) -> None:
    job_id = job_with_rejects(n)
    statements.reset()
    with db.session_scope() as session:
        assert len(ledger.read_job_and_rejects(session, job_id)[1]) == n
    assert statements.count == 2, statements.seen
    statements.reset()
    assert len(ledger.get_rejects(job_id)) == n
    assert statements.count == 2, statements.seen
    statements.reset()
    assert export_rejects(job_id, tmp_path / "r.csv") == n
    assert statements.count == 2, statements.seen


def test_a_page_of_jobs_is_one_query(statements: Statements) -> None:
    for _ in range(12):
        job_with_rejects(3)
    statements.reset()
    assert len(ledger.list_jobs(limit=10)) == 10
    assert statements.count == 1, statements.seen


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_async_reads_are_the_same_queries(
    bulkops_env: dict[str, str], anyio_backend: str
) -> None:
    job_id = job_with_rejects(20)
    counter = Statements()
    engine = aclient.get_engine().sync_engine
    event.listen(engine, "before_cursor_execute", counter)
    try:
        async with aclient.session_scope() as session:
            summary, got = await aclient.summary_and_rejects(job_id, session=session)
        assert (summary.id, len(got)) == (job_id, 20)
        assert counter.count == 2, counter.seen
    finally:
        event.remove(engine, "before_cursor_execute", counter)
        await aclient.dispose_engine()
