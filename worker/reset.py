"""``bulkops reset``: drop bulkops's schema, migrate it again, optionally seed. Development only.

The seed document's ``reset_database()`` drops everything with nothing but a
comment to guard it. Here two things must both be true, so it cannot happen
by accident: ``BULKOPS_ENV=development`` in the environment, and either the
database's name typed back at the prompt or ``--yes`` (honoured only with
that setting). A refusal raises :class:`ResetRefused` (exit code 2) before
anything is touched.

What is dropped is exactly what the migrations own: Alembic downgrades to
base (each migration's own ``downgrade``), then upgrades to head, all in one
transaction (:func:`worker.migrate.rebuild`). No ``DROP SCHEMA … CASCADE``:
an application's own tables in the same database stay, rows and all. The
jobs' uploaded files (large objects, which no table drop removes) are
unlinked in the same transaction.

``--seed`` runs the normal seed job (a ledger row, its plan, its chunks,
COPY), but in this process: no worker or Redis message is needed, and the
command returns when the data is there.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from worker import db, ledger, migrate, runner, upload_postgres, uploads
from worker.config import Settings, get_settings
from worker.errors import BulkopsError, ConcurrencyConflict, UsageError
from worker.models import JobKind
from worker.seeding import SEED, SeedParams
from worker.summary import JobSummary

DEVELOPMENT = "development"

AskFn = Callable[[str], str | None]


class ResetRefused(UsageError):
    """bulkops reset refused: the database is not marked for development, or not confirmed."""


def database_name(settings: Settings) -> str:
    return make_url(settings.sqlalchemy_url).database or ""


def authorize(settings: Settings, yes: bool, ask: AskFn) -> str:
    """The database's name, if resetting it is allowed; else ResetRefused."""
    name = database_name(settings)
    if settings.bulkops_env.strip().lower() != DEVELOPMENT:
        raise ResetRefused(
            f"refusing to reset database {name!r}: BULKOPS_ENV is not {DEVELOPMENT!r} "
            f"(set BULKOPS_ENV={DEVELOPMENT} only for a database you may lose); nothing dropped"
        )
    if yes:
        return name
    typed = ask(f"This drops every bulkops table in database {name!r}. Type its name to go on: ")
    if (typed or "").strip() != name:
        raise ResetRefused(
            f"refusing to reset: the name typed does not match database {name!r}; nothing dropped"
        )
    return name


def ask_stdin(prompt: str) -> str | None:
    """The prompt on stderr, one line from stdin (None at end of input)."""
    sys.stderr.write(prompt)
    sys.stderr.flush()
    line = sys.stdin.readline()
    if not sys.stdin.isatty():
        sys.stderr.write("\n")  # what was typed did not echo: end the prompt's line
    return line or None


def _discard_uploads(conn: Connection) -> None:
    """The jobs' uploads: large objects in this transaction, objects elsewhere best effort."""
    for params in ledger.upload_params(conn):
        ref = uploads.UploadRef.from_params(params)
        if ref.oid is not None:
            upload_postgres.unlink(conn, ref.oid)
        else:
            with contextlib.suppress(Exception):
                uploads.discard(ref)


def seed_inline(params: SeedParams) -> JobSummary:
    """The seed job, planned and run chunk by chunk in this process (same ledger, same COPY)."""
    job_id = ledger.submit(JobKind.SEED, params.to_params(), lambda _job_id, _task_id: None)

    def run_now(jid: int, chunk_no: int) -> None:  # "enqueue" = run the chunk here and now
        runner.run_chunk(jid, chunk_no, SEED, enqueue=run_now)  # then its next phase

    runner.start_job(job_id, SEED, run_now)
    return ledger.get_summary(job_id)


@dataclass(frozen=True)
class ResetResult:
    database: str
    revision: str | None
    seeded: JobSummary | None


def reset(
    seed: SeedParams | None = None,
    yes: bool = False,
    ask: AskFn = ask_stdin,
    settings: Settings | None = None,
) -> ResetResult:
    """Authorize, drop and migrate again, then seed if asked."""
    settings = settings or get_settings()
    name = authorize(settings, yes, ask)
    db.dispose_engine()  # no pooled connection of ours holds a lock on the tables
    try:
        revision = migrate.rebuild(settings.database_url, before_drop=_discard_uploads)
    except ConcurrencyConflict as exc:
        raise BulkopsError(
            f"cannot reset {name!r}: another session holds bulkops's tables "
            f"(stop the workers first): {exc.message}; nothing dropped"
        ) from exc
    seeded = seed_inline(seed) if seed is not None else None
    return ResetResult(name, revision, seeded)


def run(seed: bool = False, yes: bool = False) -> str:
    """What ``bulkops reset`` does and prints."""
    result = reset(SeedParams() if seed else None, yes)
    message = f"reset database {result.database!r}: dropped, migrated to {result.revision}"
    if result.seeded is not None:
        s = result.seeded
        message += f"; seeded (job {s.id}, {s.state}): {s.rows_inserted} rows inserted"
    return message
