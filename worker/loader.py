"""Set-based loading of validated rows, exact whatever the database refuses.

``load`` runs inside a chunk's transaction:

1. **Optimistic COPY** straight into the table in a savepoint. When nothing
   conflicts and nothing is refused (a fresh load) that is all: raw COPY speed.
2. When that COPY meets existing keys (a re-import, a file that overlaps the
   table), one query finds the rows whose key exists: the others take the
   straight COPY, and only those are rejected (insert), skipped, or staged
   and upserted. Each process remembers per table which way the last chunk
   went, so the next starts there.
3. Otherwise (the database refused rows, or the split COPY still met
   something) COPY into a temporary staging table, then, set-based:

   - evaluate the table's own CHECK and FOREIGN KEY constraints, read from
     the catalog, over the staged rows (one query each): rows they refuse
     become rejects carrying the constraint's name, as PostgreSQL words it;
   - one ``INSERT … SELECT … ON CONFLICT`` (``DO NOTHING`` for insert and
     skip, ``DO UPDATE … WHERE changed`` for upsert) in a savepoint: atomic
     against concurrent writers, so a key committed meanwhile is a conflict,
     never a lost update.

4. If that statement still fails (a trigger that raises, an exclusion
   constraint, a parent deleted meanwhile), the refused rows are **found by
   trial**: COPYs of the remaining rows in savepoints that are always rolled
   back, where the error names the refused line (``COPY todos, line N``) or,
   when it names none (foreign keys, checked at the end of a statement),
   halves are tried down to one row. Then the good rows are loaded again in
   one statement.

PostgreSQL caches 64 subtransaction ids per backend; only savepoints that
wrote and were *released* stay in that cache until the top transaction ends
(an aborted one leaves it at once, and one that wrote nothing never has an
id). So trials cost no cache slots: a chunk keeps at most
:data:`MAX_ROUNDS` + 2 released savepoints, whatever the number of refused
rows. No good row is ever rejected for want of budget.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from worker.db import array_literal, array_param, copy_rows, savepoint
from worker.errors import ConcurrencyConflict, DataError, UniqueViolation
from worker.ledger import RejectedRow

# Rounds of "find the refused rows by trial, load the rest" before a chunk is
# retried as a whole (each round only happens when rows interact: a trigger or
# exclusion constraint that accepts rows one by one and refuses them together).
MAX_ROUNDS = 4
# Trial COPY windows: start with the whole chunk, halve after a refusal, grow
# after a clean window. A refusal costs at most one window of re-sent rows.
_MIN_WINDOW = 64

# Per process and table, how the last chunk had to load, so the next one starts
# there: "copy" (a fresh load: straight COPY), "split" (it met existing keys: find
# them with one query, COPY the others straight in), "stage" (the database refused
# rows validation did not: staging and the set-based checks).
_route: dict[str, str] = {}
_CLOCKS = frozenset({"now()", "current_timestamp", "transaction_timestamp()", "localtimestamp"})

Record = tuple[int, tuple[Any, ...]]  # (line, values in TableSpec.columns order)


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
    # Columns whose missing value (None) means "the table's default", and that
    # default's SQL (parallel): staging keeps NULL, so an upsert leaves the
    # row's value; an insert takes the default. A clock (now()) is filled in
    # by COPY itself, one instant per chunk as now() is one per transaction.
    defaults: tuple[str, ...] = ()
    default_sql: tuple[str, ...] = ()

    def insert_expr(self, column: str) -> str:
        if column not in self.defaults:
            return column
        return f"coalesce({column}, {self.default_sql[self.defaults.index(column)]})"

    def is_clock(self, column: str) -> bool:
        """Its default is the transaction's time, which COPY can fill in itself."""
        sql = self.default_sql[self.defaults.index(column)].lower().replace(" ", "")
        return sql in _CLOCKS

    @property
    def key_positions(self) -> list[int]:
        """Where the natural key's columns are in ``columns``."""
        return [self.columns.index(c) for c in self.key]

    @property
    def staging(self) -> str:
        return f"bulkops_stage_{self.table}"


@dataclass
class LoadOutcome:
    inserted: int = 0
    updated: int = 0
    skipped: int = 0
    rejects: list[RejectedRow] = field(default_factory=list)
    existing: int = 0  # rows whose key was in the table (rejected, skipped or updated)
    refused: int = 0  # rows the database refused (in ``rejects``)


def load(
    session: Session,
    spec: TableSpec,
    records: Sequence[Record],
    raw: dict[int, str],
    mode: str,
    dry_run: bool,
) -> LoadOutcome:
    """Load (line, values) records in ``mode``; with ``dry_run`` nothing stays written."""
    if not records:
        return LoadOutcome()
    if not dry_run:
        return _load(session, spec, records, raw, mode)
    with savepoint(session, keep=False):
        return _load(session, spec, records, raw, mode)


def _load(
    session: Session, spec: TableSpec, records: Sequence[Record], raw: dict[int, str], mode: str
) -> LoadOutcome:
    route = _route.get(spec.table, "copy")
    if route == "copy":
        try:
            with savepoint(session):
                inserted = _copy_new(session, spec, records)
            if inserted is not None:
                return LoadOutcome(inserted=inserted)
        except UniqueViolation:
            route = "split"
        except DataError:
            route = "stage"
    if route == "split":
        split = _load_split(session, spec, records, raw, mode)
        if split is not None:
            _route[spec.table] = "split" if split.existing else "copy"
            return split
    outcome = _load_staged(session, spec, records, raw, mode)
    _route[spec.table] = "stage" if outcome.refused else "split" if outcome.existing else "copy"
    return outcome


def _load_split(
    session: Session, spec: TableSpec, records: Sequence[Record], raw: dict[int, str], mode: str
) -> LoadOutcome | None:
    """Rows whose key exists one way, the others straight in by COPY; None: stage them all.

    Most rows of a chunk that meets existing keys (a re-import, a file that
    overlaps the table) are still new, and COPY is the fastest way in. Only
    the existing ones are rejected (insert), skipped, or staged and upserted.
    Anything the COPY still meets (a key committed meanwhile, a row the
    database refuses) sends the whole chunk through staging instead.
    """
    try:  # read-only: this savepoint never takes a subtransaction id
        with savepoint(session):
            found = _lines_with_existing_key(session, spec, records)
    except DataError:
        return None  # a key value the server would not cast back: staging decides
    old = [r for r in records if r[0] in found]
    new = [r for r in records if r[0] not in found]
    try:
        with savepoint(session):
            inserted = _copy_new(session, spec, new) if new else 0
    except DataError:
        return None
    if inserted is None:
        return None
    outcome = LoadOutcome(inserted=inserted, existing=len(old))
    if mode == "skip":
        outcome.skipped = len(old)
    elif mode == "insert":
        outcome.rejects = [
            RejectedRow(line, spec.key_column, _exists_reason(spec), raw.get(line))
            for line, _ in old
        ]
    elif old:
        rest = _load_staged(session, spec, old, raw, mode)
        outcome.inserted += rest.inserted
        outcome.updated, outcome.skipped = rest.updated, rest.skipped
        outcome.rejects, outcome.refused = rest.rejects, rest.refused
    return outcome


def _lines_with_existing_key(
    session: Session, spec: TableSpec, records: Sequence[Record]
) -> set[int]:
    """The lines whose natural key is in the table now: one query, the keys bound as arrays
    (:func:`worker.db.array_literal`)."""
    positions = spec.key_positions
    first = positions[0]
    pick = operator.itemgetter(*positions) if len(positions) > 1 else lambda vs: (vs[first],)
    keyed = [(ln, key) for ln, vs in records if None not in (key := pick(vs))]
    if not keyed:
        return set()
    lines, keys = zip(*keyed, strict=True)
    # as text, as COPY sends them, cast back by the server
    columns = zip(*keys, strict=True)
    params = {f"k{n}": array_literal(column) for n, column in enumerate(columns)}
    params["lines"] = array_literal(lines)
    arrays = ", ".join(array_param(f"k{n}", "text") for n in range(len(positions)))
    names = ", ".join(f"k{n}" for n in range(len(positions)))
    match = " AND ".join(
        f"t.{spec.key[n]} = CAST(u.k{n} AS {spec.types[i]})" for n, i in enumerate(positions)
    )
    rows = session.execute(
        text(
            f"SELECT u.line FROM unnest({array_param('lines', 'bigint')}, {arrays}) "
            f"AS u(line, {names}) "
            f"CROSS JOIN {_probe(spec.table, 't', match)}"
        ),
        params,
    )
    return {int(r[0]) for r in rows}


def _probe(table: str, alias: str, match: str) -> str:
    """A LATERAL subquery (``hit``, one column ``bulkops_found``): ``table``'s row that ``match``
    finds for the outer row, looked up on its own, by the table's index.

    Not ``EXISTS``: for a chunk of rows PostgreSQL turns that into a hash join
    as soon as hashing the whole table looks cheaper, so every chunk would read
    the table whole and an import would slow with the rows it has loaded
    (measured, 20k keys against 1M rows: 383 ms hashed, 135 ms probed). The
    LIMIT keeps the planner from making it a join.
    """
    return f"LATERAL (SELECT true FROM {table} {alias} WHERE {match} LIMIT 1) AS hit(bulkops_found)"


def _exists_reason(spec: TableSpec) -> str:
    return f"already exists: {spec.key_label} (use --mode skip or upsert)"


def _load_staged(
    session: Session, spec: TableSpec, records: Sequence[Record], raw: dict[int, str], mode: str
) -> LoadOutcome:
    """Staging, the constraints checked set-based, one loading statement; refused rows found."""
    outcome = LoadOutcome()
    staged = _stage(session, spec, records, raw, outcome)
    refused = _refused_by_constraints(session, spec)
    if refused and mode != "upsert":  # an existing key is skipped or rejected as such,
        existing = set(_existing_lines(session, spec))  # whatever its other values
        refused = {line: why for line, why in refused.items() if line not in existing}
    _reject(session, spec, refused, raw, outcome)
    for _ in range(MAX_ROUNDS):
        try:
            with savepoint(session):
                _insert_staged(session, spec, raw, mode, outcome)
            return outcome
        except DataError:
            pass
        refused = _find_refused(session, spec, staged, mode)
        if not refused:
            break
        _reject(session, spec, refused, raw, outcome)
    raise ConcurrencyConflict(
        "the database kept refusing rows of this chunk that it accepted one by one "
        "(concurrent writers?); the chunk is retried"
    )


def _copy_new(session: Session, spec: TableSpec, records: Sequence[Record]) -> int | None:
    """COPY records straight into the table; None when they need staging instead.

    A defaulted column no row gives is left out (the table applies its
    default); one some rows give is filled in with the chunk's clock if its
    default is a clock, else the records go through staging (coalesce).
    """
    given = [
        i
        for i, c in enumerate(spec.columns)
        if c not in spec.defaults or any(values[i] is not None for _, values in records)
    ]
    partial = [spec.columns[i] for i in given if spec.columns[i] in spec.defaults]
    if any(not spec.is_clock(c) for c in partial):
        return None
    columns = [spec.columns[i] for i in given]
    rows = _in_key_order(spec, [values for _, values in records])
    if len(given) < len(spec.columns):
        pick = operator.itemgetter(*given)
        rows = [pick(values) for values in rows] if len(given) > 1 else [(pick(v),) for v in rows]
    return copy_rows(session, spec.table, columns, _with_clock(spec, columns, rows))


def _in_key_order(spec: TableSpec, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rows sorted by the natural key, so the COPY inserts each key's index in order.

    Rows arriving in key order descend the key's B-tree to neighbouring leaves
    instead of random ones (measured: a 100k-row COPY into todos, 28% less
    server time). Row ids then follow key order within a chunk, not file order.
    Keys that do not compare (None beside a value) are left in file order.

    One stable sort per key column, the last first: the order of a sort by the
    whole key, but each pass compares plain values, which Python's sort does
    without tuple comparisons (measured on a 20k-row chunk of todos: 31 -> 8.5 ms).
    """
    positions = spec.key_positions
    if not positions:
        return rows
    try:
        ordered = sorted(rows, key=operator.itemgetter(positions[-1]))
        for position in reversed(positions[:-1]):
            ordered.sort(key=operator.itemgetter(position))
    except TypeError:
        return rows
    return ordered


def _with_clock(
    spec: TableSpec, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """The rows (values in ``columns`` order), a missing clock-defaulted value filled in."""
    slots = [i for i, c in enumerate(columns) if c in spec.defaults]
    if not slots:
        return rows
    if len(slots) == 1:
        only = slots[0]
        missing = [n for n, values in enumerate(rows) if values[only] is None]
    else:
        pick = operator.itemgetter(*slots)
        missing = [n for n, values in enumerate(rows) if None in pick(values)]
    if not missing:
        return rows
    rows = list(rows)
    now = datetime.now(UTC)  # one instant per chunk, as now() is one per transaction
    for n in missing:
        values = rows[n]
        rows[n] = tuple(now if i in slots and v is None else v for i, v in enumerate(values))
    return rows


# --- staging ------------------------------------------------------------------------


def _stage(
    session: Session,
    spec: TableSpec,
    records: Sequence[Record],
    raw: dict[int, str],
    outcome: LoadOutcome,
) -> dict[int, tuple[Any, ...]]:
    """COPY the records into a fresh staging table; returns what was staged by line.

    A value that cannot be sent at all (it cannot be encoded) is rejected
    here, with its row, and the others are staged.
    """
    columns = ", ".join(f"{c} {t}" for c, t in zip(spec.columns, spec.types, strict=True))
    session.execute(
        text(
            f"CREATE TEMP TABLE IF NOT EXISTS {spec.staging} "
            f"(line bigint PRIMARY KEY, {columns}) ON COMMIT DROP"
        )
    )
    session.execute(text(f"TRUNCATE {spec.staging}"))
    pending = list(records)
    while True:
        try:
            copy_rows(
                session, spec.staging, ("line", *spec.columns), ((ln, *v) for ln, v in pending)
            )
            return dict(pending)
        except DataError as exc:
            if exc.copy_line is None or exc.sqlstate is not None:
                raise  # refused by the server: the transaction is broken, let the chunk retry
            line = pending.pop(exc.copy_line - 1)[0]
            outcome.rejects.append(RejectedRow(line, None, exc.message, raw.get(line)))


def _reject(
    session: Session,
    spec: TableSpec,
    refused: dict[int, str],
    raw: dict[int, str],
    outcome: LoadOutcome,
) -> None:
    """Take refused lines out of staging; each is a reject with the database's message."""
    if not refused:
        return
    session.execute(
        text(f"DELETE FROM {spec.staging} WHERE line = ANY(:lines)"), {"lines": list(refused)}
    )
    outcome.refused += len(refused)
    outcome.rejects += [
        RejectedRow(line, None, f"database: {message}", raw.get(line))
        for line, message in sorted(refused.items())
    ]


def _staged_rows(spec: TableSpec) -> str:
    """The staged rows as the table would store them (defaults applied)."""
    return (
        f"(SELECT line, {', '.join(f'{spec.insert_expr(c)} AS {c}' for c in spec.columns)} "
        f"FROM {spec.staging})"
    )


def _refused_by_constraints(session: Session, spec: TableSpec) -> dict[int, str]:
    """Lines that the table's CHECK and FOREIGN KEY constraints refuse, set-based.

    The constraints are read from the catalog, so a team's own constraints
    count as well as ours. A constraint over columns that are not staged is
    left to the database (and to :func:`_find_refused`).
    """
    constraints = session.execute(
        text(
            """
            SELECT c.conname, c.contype, pg_get_constraintdef(c.oid) AS definition,
                   ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, i)
                         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n
                         ORDER BY k.i) AS cols,
                   c.confrelid::regclass::text AS parent,
                   ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(n, i)
                         JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n
                         ORDER BY k.i) AS parent_cols
            FROM pg_constraint c
            WHERE c.conrelid = CAST(:table AS regclass) AND c.contype IN ('c', 'f')
            ORDER BY c.conname
            """
        ),
        {"table": spec.table},
    ).all()
    refused: dict[int, str] = {}
    rows = _staged_rows(spec)
    for con in constraints:
        if not set(con.cols) <= set(spec.columns):
            continue
        if con.contype == "c":
            condition = _check_expression(con.definition)
            query = f"SELECT line FROM {rows} s WHERE ({condition}) IS FALSE"
            message = (
                f'new row for relation "{spec.table}" violates check constraint "{con.conname}"'
            )
        else:
            match = " AND ".join(
                f"p.{pc} = s.{c}" for c, pc in zip(con.cols, con.parent_cols, strict=True)
            )
            present = " AND ".join(f"s.{c} IS NOT NULL" for c in con.cols)
            query = (
                f"SELECT line FROM {rows} s LEFT JOIN {_probe(con.parent, 'p', match)} ON true "
                f"WHERE {present} AND hit.bulkops_found IS NULL"
            )
            message = (
                f'insert or update on table "{spec.table}" violates foreign key '
                f'constraint "{con.conname}"'
            )
        try:  # read-only: this savepoint never takes a subtransaction id
            with savepoint(session):
                lines = [int(r[0]) for r in session.execute(text(query))]
        except DataError:
            continue  # an expression we cannot evaluate here: the database will
        for line in lines:
            refused.setdefault(line, message)
    return refused


def _check_expression(definition: str) -> str:
    """``CHECK ((x > 0)) NOT VALID`` -> ``(x > 0)``."""
    body = definition.strip()
    for suffix in (" NOT VALID", " NO INHERIT"):
        if body.endswith(suffix):
            body = body[: -len(suffix)]
    return body.removeprefix("CHECK ").strip()


# --- the one statement that loads -----------------------------------------------------


def _insert_staged(
    session: Session, spec: TableSpec, raw: dict[int, str], mode: str, outcome: LoadOutcome
) -> None:
    """Insert what is staged; conflicts by ``mode``. Adds to ``outcome`` only on success."""
    cols = ", ".join(spec.columns)
    key = ", ".join(spec.key)
    values = ", ".join(spec.insert_expr(c) for c in spec.columns)
    staged = int(session.execute(text(f"SELECT count(*) FROM {spec.staging}")).scalar_one())
    if mode == "upsert":
        inserted = updated = 0
        for given, where in _default_groups(spec):
            changes = ", ".join(f"{c} = EXCLUDED.{c}" for c in given)
            differs = " OR ".join(f"t.{c} IS DISTINCT FROM EXCLUDED.{c}" for c in given)
            rows = session.execute(
                text(
                    f"INSERT INTO {spec.table} AS t ({cols}) SELECT {values} FROM {spec.staging} "
                    f"WHERE {where} ORDER BY {key} ON CONFLICT ({key}) DO UPDATE SET {changes} "
                    f"WHERE {differs} RETURNING (xmax = 0) AS inserted"
                )
            ).all()
            inserted += sum(1 for r in rows if r.inserted)
            updated += sum(1 for r in rows if not r.inserted)
        outcome.inserted += inserted
        outcome.updated += updated
        outcome.skipped += staged - inserted - updated  # identical rows: left alone
        outcome.existing += staged - inserted
        return
    # ``=``, not IS NOT DISTINCT FROM: it lets PostgreSQL hash the anti-join
    # (measured: a nested loop over 20k x 20k rows took a minute per chunk).
    # A NULL in a key never conflicts, and natural keys here are NOT NULL.
    # Rows whose key exists are left out before the insert: PostgreSQL checks a
    # row's CHECK constraints before ON CONFLICT, and an existing key is skipped
    # (or "already exists") whatever its other values. ON CONFLICT still catches
    # a key committed meanwhile.
    match = " AND ".join(f"i.{k} = s.{k}" for k in spec.key)
    exists = " AND ".join(f"t.{k} = s.{k}" for k in spec.key)
    conflicted = [
        int(r[0])
        for r in session.execute(
            text(
                f"WITH i AS (INSERT INTO {spec.table} ({cols}) SELECT {values} FROM "
                f"{spec.staging} s LEFT JOIN {_probe(spec.table, 't', exists)} ON true "
                f"WHERE hit.bulkops_found IS NULL "
                f"ORDER BY {key} ON CONFLICT ({key}) DO NOTHING RETURNING {key}) "
                f"SELECT s.line FROM {spec.staging} s "
                f"WHERE NOT EXISTS (SELECT 1 FROM i WHERE {match}) ORDER BY s.line"
            )
        )
    ]
    outcome.inserted += staged - len(conflicted)
    outcome.existing += len(conflicted)
    if mode == "skip":
        outcome.skipped += len(conflicted)
    else:
        reason = _exists_reason(spec)
        outcome.rejects += [
            RejectedRow(line, spec.key_column, reason, raw.get(line)) for line in conflicted
        ]


def _default_groups(spec: TableSpec) -> list[tuple[tuple[str, ...], str]]:
    """(columns an upsert sets, which staged rows) pairs.

    A row that leaves a defaulted column empty keeps the existing row's value
    for it, so those rows update only the other columns.
    """
    if not spec.defaults:
        return [(spec.updatable, "true")]
    missing = " OR ".join(f"{c} IS NULL" for c in spec.defaults)
    kept = tuple(c for c in spec.updatable if c not in spec.defaults)
    groups = [(spec.updatable, f"NOT ({missing})")]
    if kept:
        groups.append((kept, missing))
    else:
        groups.append((spec.key[:1], missing))  # nothing to change: SET a key column to itself
    return groups


# --- finding refused rows by trial ---------------------------------------------------


def _find_refused(
    session: Session, spec: TableSpec, staged: dict[int, tuple[Any, ...]], mode: str
) -> dict[int, str]:
    """The staged lines the database refuses, each with its message; nothing stays written.

    New rows are tried by COPY (the error names the line); rows whose key
    already exists (updated in upsert mode) are tried by halves with the
    loading statement. Every trial's savepoint is rolled back.
    """
    lines = [int(r[0]) for r in session.execute(text(f"SELECT line FROM {spec.staging}"))]
    existing = set(_existing_lines(session, spec))
    fresh = sorted(ln for ln in lines if ln not in existing)
    refused = _trial_copy(session, spec, [(ln, staged[ln]) for ln in fresh])
    if mode == "upsert" and existing:
        refused.update(_trial_halves(session, spec, sorted(existing), mode))
    return refused


def _existing_lines(session: Session, spec: TableSpec) -> list[int]:
    match = " AND ".join(f"t.{k} = s.{k}" for k in spec.key)
    return [
        int(r[0])
        for r in session.execute(
            text(
                f"SELECT s.line FROM {spec.staging} s CROSS JOIN {_probe(spec.table, 't', match)}"
            )
        )
    ]


def _trial(session: Session, attempt: Callable[[], object]) -> DataError | None:
    """Run ``attempt()`` in a savepoint that is always rolled back; the error, if any."""
    try:
        with savepoint(session, keep=False):
            attempt()
    except DataError as exc:
        return exc
    return None


def _trial_copy(session: Session, spec: TableSpec, rows: list[Record]) -> dict[int, str]:
    """Refused lines among new ``rows``, by COPYs whose errors name the line."""
    if not all(spec.is_clock(c) for c in spec.defaults):  # COPY cannot apply the others
        return _trial_halves(session, spec, [line for line, _ in rows], "insert")
    refused: dict[int, str] = {}
    values = _with_clock(spec, spec.columns, [v for _, v in rows])
    pos, window = 0, len(rows)
    while pos < len(rows):
        part = values[pos : pos + window]
        exc = _trial(session, partial(copy_rows, session, spec.table, spec.columns, part))
        if exc is None:
            pos += len(part)
            window = min(len(rows), window * 2)
        elif exc.copy_line is not None and 1 <= exc.copy_line <= len(part):
            bad = pos + exc.copy_line - 1
            refused[rows[bad][0]] = exc.message
            pos = bad + 1
            window = max(_MIN_WINDOW, window // 2)
        elif len(part) == 1:
            refused[rows[pos][0]] = exc.message
            pos += 1
        else:
            window = max(1, len(part) // 2)  # the error names no line: try halves
    return refused


def _trial_halves(session: Session, spec: TableSpec, lines: list[int], mode: str) -> dict[int, str]:
    """Refused lines among ``lines``, by trying the loading statement on halves."""
    refused: dict[int, str] = {}
    pending = [lines] if lines else []
    scratch = LoadOutcome()
    while pending:
        part = pending.pop()
        exc = _trial(session, partial(_insert_lines, session, spec, part, mode, scratch))
        if exc is None:
            continue
        if len(part) == 1:
            refused[part[0]] = exc.message
        else:
            mid = len(part) // 2
            pending += [part[mid:], part[:mid]]
    return refused


def _insert_lines(
    session: Session, spec: TableSpec, lines: list[int], mode: str, outcome: LoadOutcome
) -> None:
    """The loading statement over some staged lines only (inside a trial, rolled back)."""
    session.execute(
        text(f"DELETE FROM {spec.staging} WHERE NOT (line = ANY(:lines))"), {"lines": lines}
    )
    _insert_staged(session, spec, {}, mode, outcome)
