"""Helpers for tests that write jobs themselves, or need them to look old."""

from __future__ import annotations

from sqlalchemy import text

from worker.db import session_scope


def no_send(job_id: int, task_id: str) -> None:
    """A send for ``ledger.submit`` that sends nothing: the job row is written, no
    message queued (a test drives the job itself, or wants it left waiting)."""
    return None


def backdate(job_id: int, seconds: int, *columns: str) -> None:
    """Move timestamps into the past, as if time had passed.

    The updated_at trigger would overwrite updated_at with now(), so it is
    switched off for this one statement (inside the same transaction).
    """
    sets = ", ".join(f"{c} = now() - make_interval(secs => :s)" for c in columns)
    with session_scope() as s:
        s.execute(text("ALTER TABLE bulkops_ledger.jobs DISABLE TRIGGER jobs_touch_updated_at"))
        s.execute(
            text(f"UPDATE bulkops_ledger.jobs SET {sets} WHERE id = :id"),
            {"id": job_id, "s": seconds},
        )
        s.execute(text("ALTER TABLE bulkops_ledger.jobs ENABLE TRIGGER jobs_touch_updated_at"))
