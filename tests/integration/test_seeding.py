"""Seeding through a real worker: counts, idempotency, determinism."""

from __future__ import annotations

from typing import Any

from import_support import TableRows, table_rows
from sqlalchemy import text

from worker import client, db


def _titles_and_statuses() -> list[tuple[str, str, str]]:
    with db.session_scope() as s:
        rows = s.execute(
            text(
                "SELECT u.email, t.title, t.status FROM todos t JOIN users u ON u.id = t.owner_id "
                "ORDER BY u.email, t.title"
            )
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def test_seed_loads_users_and_todos_then_adds_nothing_the_second_time(worker: Any) -> None:
    # Given an empty migrated database and a running worker
    # When 30 users x 70 todos are seeded (chunk size 1000 -> several chunks)
    first = client.wait(client.submit_seed(30, 70, 7), timeout=120)
    # Then every row is there and counted
    assert first.state == "succeeded", first.error
    assert table_rows() == TableRows(users=30, todos=2100)
    assert (first.rows_read, first.rows_inserted, first.rows_skipped) == (2130, 2130, 0)
    assert first.chunks_total is not None and first.chunks_total > 1
    assert first.chunks_done == first.chunks_total
    # When the identical seed runs again, it adds nothing and says so
    second = client.wait(client.submit_seed(30, 70, 7), timeout=120)
    assert second.state == "succeeded"
    assert (second.rows_inserted, second.rows_skipped) == (0, 2130)
    assert table_rows() == TableRows(users=30, todos=2100)


def test_seed_without_arguments_gives_a_small_useful_data_set(worker: Any) -> None:
    summary = client.wait(client.submit_seed(), timeout=60)
    assert summary.state == "succeeded"
    assert table_rows() == TableRows(users=10, todos=50)
    with db.session_scope() as s:
        statuses = {r[0] for r in s.execute(text("SELECT DISTINCT status FROM todos"))}
    assert len(statuses) >= 3  # a realistic mix, not one status


def test_same_seed_gives_same_rows_in_a_fresh_database(worker: Any, bulkops_env: Any) -> None:
    client.wait(client.submit_seed(12, 40, 99), timeout=60)
    expected = _titles_and_statuses()
    # Given the same database emptied (identities restarted, as in a fresh one)

    with db.session_scope() as s:
        s.execute(text("TRUNCATE todos, users RESTART IDENTITY CASCADE"))
    client.wait(client.submit_seed(12, 40, 99), timeout=60)
    assert _titles_and_statuses() == expected
    assert len(expected) == 480


def test_a_different_seed_gives_different_rows(worker: Any) -> None:
    client.wait(client.submit_seed(5, 10, 1), timeout=60)
    first = _titles_and_statuses()
    with db.session_scope() as s:
        s.execute(text("TRUNCATE todos, users RESTART IDENTITY CASCADE"))
    client.wait(client.submit_seed(5, 10, 2), timeout=60)
    assert _titles_and_statuses() != first


def test_idempotency_key_gives_one_job(worker: Any) -> None:
    a = client.submit_seed(3, 3, 5, key="nightly-seed")
    b = client.submit_seed(3, 3, 5, key="nightly-seed")
    assert a == b
    client.wait(a, timeout=60)
    assert len(client.jobs()) == 1
