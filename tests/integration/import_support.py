"""What integration tests share: owners, submit-and-wait, counters by name, the tables."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any

from jobs_support import no_send
from sqlalchemy import text

from worker import client, db, ledger
from worker.ledger import JobSummary
from worker.models import JobKind
from worker.targets import EXAMPLE_TABLE


@dataclass(frozen=True)
class Counts:
    """A finished job's state and counters, by name: ``Counts("succeeded", read=3, inserted=3)``.

    A counter left out is 0; never equal to a plain tuple, so no test compares by position.
    """

    state: str
    _: KW_ONLY
    read: int = 0
    inserted: int = 0
    updated: int = 0
    skipped: int = 0
    rejected: int = 0


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


def queued_import(path: str, mode: str = "insert") -> int:
    """An import job's row with no message behind it, for a test that drives the job itself.

    ``client.submit_import`` would also queue it, and the in-process worker an
    earlier test started would then run the job alongside the test.
    """
    params = client.import_params(path, EXAMPLE_TABLE, None, mode, False, None, None)
    return ledger.submit(JobKind.IMPORT, params, no_send)


def counts(s: JobSummary) -> Counts:
    return Counts(
        s.state,
        read=s.rows_read,
        inserted=s.rows_inserted,
        updated=s.rows_updated,
        skipped=s.rows_skipped,
        rejected=s.rows_rejected,
    )


@dataclass(frozen=True)
class TableRows:
    """How many rows the example's tables hold."""

    users: int
    todos: int


def table_rows() -> TableRows:
    with db.session_scope() as s:
        users = s.execute(text("SELECT count(*) FROM users")).scalar_one()
        todos = s.execute(text("SELECT count(*) FROM todos")).scalar_one()
    return TableRows(users=int(users), todos=int(todos))


def make_todos(statuses: list[str], owner: str = "ann@example.com") -> list[int]:
    """One todo per status, owned by ``owner`` (created if need be); their ids."""
    with db.session_scope() as s:
        uid = s.execute(
            text(
                "INSERT INTO users (email, name) VALUES (:e, 'x') ON CONFLICT (email) "
                "DO UPDATE SET name = users.name RETURNING id"
            ),
            {"e": owner},
        ).scalar_one()
        return [
            int(
                s.execute(
                    text(
                        "INSERT INTO todos (title, status, owner_id) "
                        "VALUES (:t, :s, :o) RETURNING id"
                    ),
                    {"t": f"{owner} {i}", "s": st, "o": uid},
                ).scalar_one()
            )
            for i, st in enumerate(statuses)
        ]


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
