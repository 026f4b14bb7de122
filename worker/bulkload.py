"""Seeding's bulk path (COPY, then staging with ON CONFLICT DO NOTHING) and owners by email.

Imports load through :mod:`worker.loader`, which also finds rows the database
refuses; seeding generates rows that are valid by construction. Optimistic
first: rows are COPYed straight into the target table inside a savepoint (raw
COPY speed when nothing conflicts). If the database refuses
the batch, we roll back to the savepoint and load through a temporary
staging table with ``INSERT … SELECT … ON CONFLICT DO NOTHING``, which finds
every conflict in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from worker.db import copy_rows, savepoint
from worker.errors import DataError

TODO_COLUMNS = ("title", "status", "owner_id", "created_at")
USER_COLUMNS = ("email", "name")


def create_staging(session: Session, name: str, like: str, columns: Sequence[str]) -> None:
    """A temporary table with ``columns`` of table ``like``, dropped at commit.

    ``name``, ``like`` and ``columns`` are identifiers from our code, never input.
    """
    session.execute(
        text(
            f"CREATE TEMP TABLE IF NOT EXISTS {name} ON COMMIT DROP AS "
            f"SELECT {', '.join(columns)} FROM {like} WITH NO DATA"
        )
    )
    session.execute(text(f"TRUNCATE {name}"))


def insert_new(
    session: Session,
    table: str,
    columns: Sequence[str],
    conflict: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> int:
    """Insert ``rows`` that do not exist yet (by the ``conflict`` key); returns rows inserted.

    Tries a direct COPY first; on a conflict falls back to staging + ON CONFLICT.
    An empty ``conflict`` skips a row that conflicts with any unique constraint.
    """
    if not rows:
        return 0
    try:
        with savepoint(session):
            return copy_rows(session, table, columns, rows)
    except DataError:
        pass
    staging = f"staging_{table}"
    create_staging(session, staging, table, columns)
    copy_rows(session, staging, columns, rows)
    cols = ", ".join(columns)
    result = session.execute(
        text(
            f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {staging} "
            f"ON CONFLICT {'(' + ', '.join(conflict) + ')' if conflict else ''} DO NOTHING"
        )
    )
    session.execute(text(f"TRUNCATE {staging}"))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def owner_ids(session: Session, emails: Sequence[str]) -> dict[str, int]:
    """User ids by email for one batch of emails: one query, never one per row."""
    if not emails:
        return {}
    rows = session.execute(
        text("SELECT email, id FROM users WHERE email = ANY(:emails)"),
        {"emails": list(set(emails))},
    )
    return {str(email): int(uid) for email, uid in rows}
