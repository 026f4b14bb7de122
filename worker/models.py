"""All tables: the data model (users, todos) and the job ledger.

The ledger (every table bulkops owns) lives in its own PostgreSQL schema,
:data:`LEDGER_SCHEMA`, and every statement names it: an application's own
tables (a ``public.jobs`` of its own, its ``alembic check``) never meet it.
The example's ``users`` and ``todos`` are the example application's, in the
default schema.

Timestamps are timezone-aware UTC, set by the database. ``updated_at`` is kept
true by a trigger created in the first migration, so it changes on every
UPDATE, whoever issues it (the ORM, a bulk statement or psql).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


def _created_at() -> Any:
    return Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )


def _updated_at() -> Any:
    return Field(
        default=None,
        sa_column=Column(
            DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
        ),
    )


class TodoStatus(enum.StrEnum):
    ACTIVE = "active"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    ARCHIVED = "archived"


STATUSES: tuple[str, ...] = tuple(s.value for s in TodoStatus)

# Allowed status transitions: from -> the statuses it may move to. Nothing moves
# to itself; an archived todo may only come back to active.
TRANSITIONS: dict[str, frozenset[str]] = {
    "active": frozenset({"in_progress", "completed", "archived"}),
    "in_progress": frozenset({"active", "completed", "archived"}),
    "completed": frozenset({"active", "in_progress", "archived"}),
    "archived": frozenset({"active"}),
}

TITLE_MAX = 200
_STATUS_LIST = ", ".join(f"'{s}'" for s in STATUSES)


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    email: str = Field(sa_column=Column(String(320), nullable=False, unique=True))
    name: str = Field(sa_column=Column(String(200), nullable=False))
    created_at: datetime | None = _created_at()
    updated_at: datetime | None = _updated_at()


class Todo(SQLModel, table=True):
    __tablename__ = "todos"
    __table_args__ = (
        UniqueConstraint("title", "owner_id", name="unique_title_per_owner"),
        CheckConstraint("length(title) > 0", name="title_not_empty"),
        CheckConstraint(f"status IN ({_STATUS_LIST})", name="status_known"),
        Index("ix_todos_title", "title"),
        Index("ix_todos_status", "status"),
        Index("ix_todos_owner_id", "owner_id"),
        Index("ix_todos_status_created_at", "status", "created_at"),
    )

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    title: str = Field(sa_column=Column(String(TITLE_MAX), nullable=False))
    status: str = Field(
        default=TodoStatus.ACTIVE.value,
        sa_column=Column(String(20), nullable=False, server_default=TodoStatus.ACTIVE.value),
    )
    owner_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    )
    created_at: datetime | None = _created_at()
    updated_at: datetime | None = _updated_at()


# --- job ledger ------------------------------------------------------------------

# Not "bulkops": PostgreSQL's default search_path starts with "$user", and the
# compose stack's role is bulkops, so a schema of that name would be first in
# every one of its connections (unqualified CREATE TABLE would land in it, an
# application's unqualified "jobs" would resolve to the ledger's).
LEDGER_SCHEMA = "bulkops_ledger"
_IN_LEDGER = {"schema": LEDGER_SCHEMA}
_JOB_ID_FK = f"{LEDGER_SCHEMA}.jobs.id"


class JobKind(enum.StrEnum):
    IMPORT = "import"
    UPDATE_STATUS = "update_status"
    SEED = "seed"


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"  # cancel asked; in-flight chunks have not all ended yet
    SUCCEEDED = "succeeded"
    PARTIALLY_SUCCEEDED = "partially_succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STATES: frozenset[str] = frozenset(
    {JobState.SUCCEEDED, JobState.PARTIALLY_SUCCEEDED, JobState.FAILED, JobState.CANCELLED}
)
# States in which a job's chunks may still commit.
ACTIVE_STATES: frozenset[str] = frozenset({JobState.RUNNING, JobState.CANCELLING})


def _counter() -> Any:
    return Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))


class Job(SQLModel, table=True):
    """One row per job: the truth the CLI, the API and recovery read."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_state_created_at", "state", "created_at"), _IN_LEDGER)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    kind: str = Field(sa_column=Column(String(20), nullable=False))
    state: str = Field(
        default=JobState.QUEUED.value,
        sa_column=Column(String(24), nullable=False, server_default=JobState.QUEUED.value),
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    )
    idempotency_key: str | None = Field(
        default=None, sa_column=Column(String(200), nullable=True, unique=True)
    )
    celery_task_id: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    rows_read: int = _counter()
    rows_inserted: int = _counter()
    rows_updated: int = _counter()
    rows_skipped: int = _counter()
    rows_rejected: int = _counter()
    chunks_total: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    chunks_done: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default="0")
    )
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    cancel_requested: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=text("false"))
    )
    longest_batch_s: float | None = Field(default=None, sa_column=Column(Float, nullable=True))
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime | None = _created_at()
    updated_at: datetime | None = _updated_at()
    started_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    finished_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    heartbeat_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    # When recovery last re-sent the job's message (at most once per period).
    resent_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class JobChunk(SQLModel, table=True):
    """One row per committed chunk, written in the chunk's own transaction."""

    __tablename__ = "job_chunks"
    __table_args__ = _IN_LEDGER

    job_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey(_JOB_ID_FK, ondelete="CASCADE"), primary_key=True)
    )
    chunk_no: int = Field(sa_column=Column(Integer, primary_key=True))
    rows_read: int = _counter()
    rows_inserted: int = _counter()
    rows_updated: int = _counter()
    rows_skipped: int = _counter()
    rows_rejected: int = _counter()
    elapsed_s: float = Field(
        default=0.0, sa_column=Column(Float, nullable=False, server_default="0")
    )
    worker: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    committed_at: datetime | None = _created_at()


class JobChunkStart(SQLModel, table=True):
    """Starts of a chunk that have not (yet) ended: committed in their own transaction.

    A chunk whose worker dies (SIGKILL, OOM, hard time limit) leaves its start
    counted; past ``BULKOPS_MAX_ATTEMPTS`` the job fails instead of looping.
    ``resent_at`` is when recovery last sent the chunk again after such a death.
    """

    __tablename__ = "job_chunk_starts"
    __table_args__ = _IN_LEDGER

    job_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey(_JOB_ID_FK, ondelete="CASCADE"), primary_key=True)
    )
    chunk_no: int = Field(sa_column=Column(Integer, primary_key=True))
    unfinished: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default="0")
    )
    started_at: datetime | None = _created_at()
    resent_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class JobUpdateId(SQLModel, table=True):
    """The ids of a status update's ``--ids-file``, read once by the plan.

    Each chunk reads its own batch from here (``chunk_no``), so neither the
    job's params nor any one chunk holds every id. A duplicate id keeps only
    its first line: the later ones are rejects, with ``dup_of`` that line and no
    ``chunk_no``.
    """

    __tablename__ = "job_update_ids"
    __table_args__ = (Index("ix_job_update_ids_job_id_chunk_no", "job_id", "chunk_no"), _IN_LEDGER)

    job_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey(_JOB_ID_FK, ondelete="CASCADE"), primary_key=True)
    )
    line: int = Field(sa_column=Column(BigInteger, primary_key=True))
    row_id: int = Field(sa_column=Column(BigInteger, nullable=False))  # the target's primary key
    chunk_no: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    dup_of: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class JobKeyDup(SQLModel, table=True):
    """Every occurrence of a natural key that appears more than once in an import file.

    Written by the plan (one pass over the file, keys as 64-bit digests), read
    by each chunk: a row whose key also occurs on another line, in any chunk, is
    decided as one sequential pass over the file would decide it (the earlier
    valid line wins in insert/skip, the last valid line wins in upsert), whatever
    order the chunks commit in. Two chunks of one job never write the same key.
    """

    __tablename__ = "job_key_dups"
    __table_args__ = (Index("ix_job_key_dups_job_id_digest", "job_id", "digest"), _IN_LEDGER)

    job_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey(_JOB_ID_FK, ondelete="CASCADE"), primary_key=True)
    )
    line: int = Field(sa_column=Column(BigInteger, primary_key=True))
    chunk_no: int = Field(sa_column=Column(Integer, nullable=False))
    digest: int = Field(sa_column=Column(BigInteger, nullable=False))  # 64 bits of the key
    start: int = Field(sa_column=Column(BigInteger, nullable=False))  # byte range of the record
    end: int = Field(sa_column=Column(BigInteger, nullable=False))


class JobReject(SQLModel, table=True):
    """One row per rejected input row: where it was, why, and its original text."""

    __tablename__ = "job_rejects"
    __table_args__ = (Index("ix_job_rejects_job_id_line", "job_id", "line"), _IN_LEDGER)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    job_id: int = Field(
        sa_column=Column(BigInteger, ForeignKey(_JOB_ID_FK, ondelete="CASCADE"), nullable=False)
    )
    chunk_no: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    line: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    column: str | None = Field(default=None, sa_column=Column(String(200), nullable=True))
    reason: str = Field(sa_column=Column(Text, nullable=False))
    raw: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class HealthCheck(SQLModel, table=True):
    """One row per health check run; old rows are pruned by the health task."""

    __tablename__ = "health_checks"
    # Named: index=True would name it after the schema-qualified column.
    __table_args__ = (Index("ix_health_checks_checked_at", "checked_at"), _IN_LEDGER)

    id: int | None = Field(default=None, sa_column=Column(BigInteger, primary_key=True))
    checked_at: datetime | None = Field(
        default=None,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now()),
    )
    healthy: bool = Field(sa_column=Column(Boolean, nullable=False))
    details: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    )
