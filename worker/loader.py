"""Set-based loading of validated rows, with savepoint recovery.

``load`` runs inside a chunk's transaction:

1. **Optimistic COPY** straight into the table in a savepoint. When nothing
   conflicts (a fresh load) that is all: raw COPY speed, no RETURNING.
2. Otherwise roll back to the savepoint, COPY into a temporary staging table
   and let the database find every conflict with the existing rows in one
   ``DELETE … USING … RETURNING line`` (plus one ``UPDATE … FROM`` for
   upserts). The rest goes in with one ``INSERT … SELECT`` in a savepoint.
3. If that still fails (a constraint nobody foresaw, a key inserted
   concurrently), conflicts are looked for once more, then the remaining
   rows are COPYed again: where the error names the failing line (``COPY
   todos, line N`` for type, unique and check errors) the rows before it are
   loaded, it becomes a reject carrying the database's own message, and the
   COPY goes on after it; two savepoints per bad row. Errors that name no
   line (foreign keys, checked at the end of the statement) are **bisected**:
   halves in their own savepoints, down to single rows, which become rejects
   carrying the database's own message.

Savepoints per chunk stay under :data:`SAVEPOINT_BUDGET` (PostgreSQL caches
64 subtransaction ids per backend); a chunk that would need more rejects the
rows it could not isolate, with the database's message, instead of slowing
the whole cluster.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from worker.db import copy_rows, savepoint
from worker.errors import DataError
from worker.ledger import RejectedRow
from worker.validation import TodoRow, UserRow

SAVEPOINT_BUDGET = 48

# Per process and table: the last chunk met existing rows, so the next one goes
# to staging first instead of paying for an optimistic COPY that will fail
# (re-imports and upserts conflict on every chunk; a fresh load never does).
_stage_first: dict[str, bool] = {}


@dataclass(frozen=True)
class TableSpec:
    """How to load one table. Every name here is ours, never input."""

    table: str
    columns: tuple[str, ...]
    types: tuple[str, ...]  # staging column types, parallel to ``columns``
    key: tuple[str, ...]  # the natural key (a unique constraint)
    updatable: tuple[str, ...]  # what an upsert may change
    key_label: str  # for messages
    key_column: str  # the input column a conflict reject points at
    # Columns whose missing value (None) means "the table's default": COPY gets
    # the chunk's clock, staging keeps NULL so an upsert leaves the row's value.
    defaults: tuple[str, ...] = ()

    def insert_expr(self, column: str) -> str:
        return f"coalesce({column}, now())" if column in self.defaults else column

    def update_expr(self, column: str) -> str:
        if column in self.defaults:
            return f"coalesce(s.{column}, t.{column})"
        return f"s.{column}"

    @property
    def staging(self) -> str:
        return f"bulkops_stage_{self.table}"


TODOS = TableSpec(
    table="todos",
    columns=("title", "status", "owner_id", "created_at"),
    types=("text", "text", "bigint", "timestamptz"),
    key=("title", "owner_id"),
    updatable=("status", "created_at"),
    key_label="a todo with this title for this owner",
    key_column="title",
    defaults=("created_at",),
)
USERS = TableSpec(
    table="users",
    columns=("email", "name"),
    types=("text", "text"),
    key=("email",),
    updatable=("name",),
    key_label="a user with this email",
    key_column="email",
)


@dataclass
class LoadOutcome:
    inserted: int = 0
    updated: int = 0
    skipped: int = 0
    rejects: list[RejectedRow] = field(default_factory=list)


@dataclass
class _Budget:
    left: int = SAVEPOINT_BUDGET

    def take(self) -> bool:
        self.left -= 1
        return self.left >= 0


def load_todos(
    session: Session, rows: Sequence[TodoRow], owner_ids: dict[str, int], mode: str, dry_run: bool
) -> LoadOutcome:
    records = [(r.line, (r.title, r.status, owner_ids[r.owner_email], r.created_at)) for r in rows]
    return load(session, TODOS, records, {r.line: r.raw for r in rows}, mode, dry_run)


def load_users(session: Session, rows: Sequence[UserRow], mode: str, dry_run: bool) -> LoadOutcome:
    records = [(r.line, (r.email, r.name)) for r in rows]
    return load(session, USERS, records, {r.line: r.raw for r in rows}, mode, dry_run)


def load(
    session: Session,
    spec: TableSpec,
    records: Sequence[tuple[int, tuple[Any, ...]]],
    raw: dict[int, str],
    mode: str,
    dry_run: bool,
) -> LoadOutcome:
    """Load (line, values) records in ``mode``; with ``dry_run`` nothing stays written."""
    if not records:
        return LoadOutcome()
    if not dry_run:
        return _load(session, spec, records, raw, mode)
    trial = session.begin_nested()
    try:
        return _load(session, spec, records, raw, mode)
    finally:
        trial.rollback()


def _load(
    session: Session,
    spec: TableSpec,
    records: Sequence[tuple[int, tuple[Any, ...]]],
    raw: dict[int, str],
    mode: str,
) -> LoadOutcome:
    budget = _Budget()
    if not _stage_first.get(spec.table):
        budget.take()
        try:
            with savepoint(session):
                inserted = copy_rows(
                    session, spec.table, spec.columns, _with_defaults(spec, records)
                )
            return LoadOutcome(inserted=inserted)
        except DataError:
            # Something conflicts: find out what, set-based. The next chunks of
            # this process go to staging directly until one finds no conflict.
            _stage_first[spec.table] = True
    _stage(session, spec, records)
    outcome = LoadOutcome()
    for attempt in range(3):
        found = _resolve_conflicts(session, spec, raw, mode, outcome)
        if attempt == 0 and not found:
            _stage_first[spec.table] = False
        budget.take()
        try:
            with savepoint(session):
                outcome.inserted += _insert_staged(session, spec)
            return outcome
        except DataError as exc:
            if "duplicate key" not in exc.message:
                break  # not a race on the key: bisect
    lines = [
        int(r[0]) for r in session.execute(text(f"SELECT line FROM {spec.staging} ORDER BY line"))
    ]
    inserted, rejects = _recover(session, spec, records, lines, raw, budget)
    outcome.inserted += inserted
    outcome.rejects += rejects
    return outcome


def _copy_error_line(spec: TableSpec, exc: DataError) -> int | None:
    """The 1-based line of COPY data the database's error names, if it names one."""
    cause = exc.__cause__
    diag = getattr(getattr(cause, "orig", cause), "diag", None)
    found = re.search(
        rf"\bCOPY {re.escape(spec.table)}, line (\d+)", getattr(diag, "context", None) or ""
    )
    return int(found.group(1)) if found else None


def _recover(
    session: Session,
    spec: TableSpec,
    records: Sequence[tuple[int, tuple[Any, ...]]],
    lines: list[int],
    raw: dict[int, str],
    budget: _Budget,
) -> tuple[int, list[RejectedRow]]:
    """Load the staged ``lines`` by COPY, rejecting each row the database's error names.

    Each bad row costs two savepoints (the COPY that fails, then the rows
    before it); what is left when an error names no line is bisected.
    """
    wanted = set(lines)
    pending = [(ln, v) for ln, v in records if ln in wanted]
    pending = list(zip([ln for ln, _ in pending], _with_defaults(spec, pending), strict=True))
    inserted = 0
    rejects: list[RejectedRow] = []
    while pending and budget.take():
        try:
            with savepoint(session):
                inserted += copy_rows(session, spec.table, spec.columns, [v for _, v in pending])
            return inserted, rejects
        except DataError as exc:
            n = _copy_error_line(spec, exc)
            message = exc.message
        if n is None or not 1 <= n <= len(pending):
            break
        before, (bad, _), pending = pending[: n - 1], pending[n - 1], pending[n:]
        if before:
            more, more_rejects = _copy_or_bisect(session, spec, before, raw, budget)
            inserted += more
            rejects += more_rejects
        rejects.append(RejectedRow(bad, None, f"database: {message}", raw.get(bad)))
    more, more_rejects = _bisect(session, spec, [ln for ln, _ in pending], raw, budget)
    return inserted + more, rejects + more_rejects


def _copy_or_bisect(
    session: Session,
    spec: TableSpec,
    rows: list[tuple[int, tuple[Any, ...]]],
    raw: dict[int, str],
    budget: _Budget,
) -> tuple[int, list[RejectedRow]]:
    """COPY rows the database did not object to; bisect them if it objects after all."""
    if budget.take():
        try:
            with savepoint(session):
                return copy_rows(session, spec.table, spec.columns, [v for _, v in rows]), []
        except DataError:
            pass
    return _bisect(session, spec, [ln for ln, _ in rows], raw, budget)


def _with_defaults(
    spec: TableSpec, records: Sequence[tuple[int, tuple[Any, ...]]]
) -> list[tuple[Any, ...]]:
    now = datetime.now(UTC)  # one instant per chunk, as now() is one per transaction
    slots = [i for i, c in enumerate(spec.columns) if c in spec.defaults]
    if not slots:
        return [v for _, v in records]
    out = []
    for _, values in records:
        if any(values[i] is None for i in slots):
            values = tuple(now if i in slots and v is None else v for i, v in enumerate(values))
        out.append(values)
    return out


def _stage(
    session: Session, spec: TableSpec, records: Sequence[tuple[int, tuple[Any, ...]]]
) -> None:
    columns = ", ".join(f"{c} {t}" for c, t in zip(spec.columns, spec.types, strict=True))
    session.execute(
        text(
            f"CREATE TEMP TABLE IF NOT EXISTS {spec.staging} "
            f"(line bigint PRIMARY KEY, {columns}) ON COMMIT DROP"
        )
    )
    session.execute(text(f"TRUNCATE {spec.staging}"))
    copy_rows(session, spec.staging, ("line", *spec.columns), ((ln, *v) for ln, v in records))


def _key_match(spec: TableSpec) -> str:
    return " AND ".join(f"t.{k} = s.{k}" for k in spec.key)


# The staged chunk is small and the table large: probe the table's unique index
# once per staged row instead of hashing a full scan of the table per chunk
# (measured: 10 ms instead of 115-160 ms per 20k-row chunk on a 1M-row table).
_INDEX_PROBES = ("enable_hashjoin", "enable_mergejoin")


def _resolve_conflicts(
    session: Session, spec: TableSpec, raw: dict[int, str], mode: str, outcome: LoadOutcome
) -> int:
    """Take staged rows whose key exists out of staging, counted by ``mode``; returns how many."""
    for setting in _INDEX_PROBES:
        session.execute(text(f"SET LOCAL {setting} = off"))
    try:
        return _take_conflicts(session, spec, raw, mode, outcome)
    finally:
        for setting in _INDEX_PROBES:
            session.execute(text(f"SET LOCAL {setting} TO DEFAULT"))


def _take_conflicts(
    session: Session, spec: TableSpec, raw: dict[int, str], mode: str, outcome: LoadOutcome
) -> int:
    match = _key_match(spec)
    updated = 0
    if mode == "upsert":
        changes = ", ".join(f"{c} = {spec.update_expr(c)}" for c in spec.updatable)
        differs = " OR ".join(
            f"t.{c} IS DISTINCT FROM {spec.update_expr(c)}" for c in spec.updatable
        )
        result = session.execute(
            text(
                f"UPDATE {spec.table} t SET {changes} FROM {spec.staging} s "
                f"WHERE {match} AND ({differs})"
            )
        )
        updated = int(result.rowcount or 0)  # type: ignore[attr-defined]
        outcome.updated += updated
    lines = [
        int(r[0])
        for r in session.execute(
            text(
                f"DELETE FROM {spec.staging} s USING {spec.table} t WHERE {match} RETURNING s.line"
            )
        )
    ]
    if mode == "insert":
        reason = f"already exists: {spec.key_label} (use --mode skip or upsert)"
        outcome.rejects += [
            RejectedRow(line, spec.key_column, reason, raw.get(line)) for line in sorted(lines)
        ]
    elif mode == "skip":
        outcome.skipped += len(lines)
    else:  # upsert: conflicts were updated, or identical and left alone (skipped)
        outcome.skipped += len(lines) - updated
    return len(lines)


def _insert_staged(
    session: Session, spec: TableSpec, lo: int | None = None, hi: int | None = None
) -> int:
    cols = ", ".join(spec.columns)
    values = ", ".join(spec.insert_expr(c) for c in spec.columns)
    where = "" if lo is None else " WHERE line BETWEEN :lo AND :hi"
    result = session.execute(
        text(f"INSERT INTO {spec.table} ({cols}) SELECT {values} FROM {spec.staging}{where}"),
        {} if lo is None else {"lo": lo, "hi": hi},
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _bisect(
    session: Session, spec: TableSpec, lines: list[int], raw: dict[int, str], budget: _Budget
) -> tuple[int, list[RejectedRow]]:
    """Insert staged rows by halves; single failing rows become rejects."""
    inserted = 0
    rejects: list[RejectedRow] = []
    pending: list[list[int]] = [lines] if lines else []
    while pending:
        part = pending.pop(0)
        if not budget.take():
            reason = (
                "not loaded: too many rows in this chunk failed for reasons validation "
                "did not foresee to isolate each one; fix the other rejects and import again"
            )
            for group in [part, *pending]:
                rejects += [RejectedRow(ln, None, reason, raw.get(ln)) for ln in group]
            break
        try:
            with savepoint(session):
                inserted += _insert_staged(session, spec, part[0], part[-1])
        except DataError as exc:
            if len(part) == 1:
                rejects.append(
                    RejectedRow(part[0], None, f"database: {exc.message}", raw.get(part[0]))
                )
            else:
                mid = len(part) // 2
                pending[:0] = [part[:mid], part[mid:]]
    return inserted, rejects
