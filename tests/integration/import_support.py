"""What import tests share: users to own todos, submit-and-wait, counters by name, the table."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import text

from worker import client, db
from worker.ledger import JobSummary


class Counts(NamedTuple):
    """A finished job's state and counters; equal to the plain tuple in this order."""

    state: str
    read: int
    inserted: int
    updated: int
    skipped: int
    rejected: int


def seed_users(*emails: str) -> None:
    with db.session_scope() as s:
        for e in emails:
            s.execute(text("INSERT INTO users (email, name) VALUES (:e, :e)"), {"e": e})


def run(path: str, timeout: float = 120, **kwargs: Any) -> JobSummary:
    """Submit, wait, and check the one invariant every job keeps."""
    s = client.wait(client.submit_import(path, **kwargs), timeout=timeout)
    assert s.finished, s
    assert s.rows_inserted + s.rows_updated + s.rows_skipped + s.rows_rejected == s.rows_read, s
    return s


def counts(s: JobSummary) -> Counts:
    return Counts(
        s.state, s.rows_read, s.rows_inserted, s.rows_updated, s.rows_skipped, s.rows_rejected
    )


def todos() -> list[tuple[str, str, str]]:
    """(title, status, owner email) of every todo, sorted."""
    with db.session_scope() as s:
        return [
            (r[0], r[1], r[2])
            for r in s.execute(
                text(
                    "SELECT t.title, t.status, u.email FROM todos t JOIN users u "
                    "ON u.id = t.owner_id ORDER BY t.title, u.email"
                )
            )
        ]


def write(root: Path, name: str, data: str | bytes) -> str:
    (root / name).write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return name
