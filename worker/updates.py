"""Bulk status updates: filtered, in keyset batches, with transition rules.

The plan walks the matching ids once in primary-key order and cuts them into
batches of ``BULKOPS_UPDATE_BATCH_SIZE`` (only the boundaries are kept, so a
filter matching millions is never held in memory). An ``--ids-file`` is read
once into ``job_update_ids`` (this module owns that table's statements) and
each batch reads its own ids from there. Each batch is one chunk:
its own short transaction that locks its rows in primary-key order (so two
jobs touching the same rows wait instead of deadlocking), refuses the
transitions the rules forbid, and updates the rest in one statement. A
redelivered job skips the batches already committed.

Every selected row is counted once: updated, skipped (already in the target
status, or an id that no longer matches the filters), or rejected (the
transition is not allowed, the id does not exist, the line is not an id).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Integer, text
from sqlmodel import Session

from worker import ledger, lookups, targets
from worker.config import get_settings
from worker.db import copy_rows
from worker.errors import UsageError
from worker.ledger import ChunkCounts, RejectedRow
from worker.models import Job, JobKind
from worker.params import JobParams
from worker.runner import ChunkResult, ReadyFn
from worker.source import confine
from worker.target_rows import Invalid, converter, parse_timestamp
from worker.targets import EXAMPLE_TABLE, StatusSpec, TargetSpec

# A batch waits at most this long for a row lock; then it is retried (retryable).
LOCK_TIMEOUT = "5s"
# ``--owner EMAIL`` (producers: ``owner_email=``) is short for ``--where owner_email=EMAIL``:
# a file column of any target with such a lookup (the example's todos have one).
OWNER_FILTER = "owner_email"


@dataclass(frozen=True)
class UpdateParams(JobParams, kind=JobKind.UPDATE_STATUS.value):
    to_status: str
    from_statuses: tuple[str, ...] = ()
    ids_file: str | None = None  # relative to the import root
    created_before: str | None = None  # ISO 8601, normalised to UTC
    dry_run: bool = False
    table: str = EXAMPLE_TABLE
    # Filters on the target's file columns (its own, or a lookup's: category_slug=home).
    where: tuple[tuple[str, str], ...] = ()
    updated_before: str | None = None  # ISO 8601: rows last changed before this

    def __post_init__(self) -> None:
        spec = self.spec()
        for status in (self.to_status, *self.from_statuses):
            if status not in status_of(spec).values:
                values = ", ".join(status_of(spec).values)
                raise UsageError(f"unknown status {status!r}: use one of {values}")
        for column, value in self.time_filters():
            option = f"--{column.removesuffix('_at')}-before"
            if column not in spec.table.c:
                raise UsageError(f"{option}: {spec.name} has no {column} column")
            try:
                parse_timestamp(value)
            except ValueError:
                raise UsageError(f"{option} {value!r} is not an ISO 8601 timestamp") from None
        if self.ids_file is not None and not isinstance(spec.table.c[spec.pk].type, Integer):
            raise UsageError(f"--ids-file: {spec.name}'s primary key is not an integer")
        given: dict[str, Any] = {}
        for name, raw in self.where:
            value = _filter_value(spec, name, raw)
            if given.setdefault(name, value) != value:
                raise UsageError(f"--where {name}: given twice, as {given[name]!r} and {value!r}")

    def spec(self) -> TargetSpec:
        return targets.get(self.table)

    @classmethod
    def upgrade(cls, params: dict[str, Any]) -> dict[str, Any]:
        """A job stored before ``--owner`` was an alias: its ``owner_email`` key, as a filter."""
        if "owner_email" not in params:
            return params
        params = dict(params)
        owner = params.pop("owner_email")
        if owner is not None:
            params["where"] = [[OWNER_FILTER, owner], *params.get("where", ())]
        return params

    def time_filters(self) -> list[tuple[str, str]]:
        """(timestamp column, ISO value) of each ``--created-before``/``--updated-before`` given."""
        given = (("created_at", self.created_before), ("updated_at", self.updated_before))
        return [(column, value) for column, value in given if value is not None]

    def to_params(self) -> dict[str, Any]:
        # updated_before only when given: a key's earlier job, submitted before
        # the filter existed, still compares equal to the same request now.
        params = super().to_params()
        if params.get("updated_before") is None:
            params.pop("updated_before", None)
        return params


def update_params(
    to_status: str,
    from_statuses: Sequence[str],
    owner_email: str | None,
    ids_file: str | Path | None,
    created_before: str | None,
    dry_run: bool,
    table: str | None = None,
    where: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
    updated_before: str | None = None,
) -> UpdateParams:
    """A producer's request as validated params, but for its parents (:func:`check_filters`).

    The one home of what ``worker.client`` and ``worker.aclient`` take:
    ``owner_email`` becomes the first ``where`` filter here (a target without
    that column is refused, naming the ones it has), an ids file is confined to
    the import root and relative times are resolved.
    """
    spec = targets.get(table or EXAMPLE_TABLE)
    pairs = list(where.items()) if isinstance(where, Mapping) else list(where or ())
    if owner_email is not None:
        if OWNER_FILTER not in spec.file_columns:
            raise UsageError(
                f"--owner: {spec.name} has no {OWNER_FILTER} column to filter by; "
                f"use --where COLUMN=VALUE on one of {', '.join(spec.file_columns)}"
            )
        pairs.insert(0, (OWNER_FILTER, owner_email))
    return UpdateParams(
        to_status=to_status,
        from_statuses=tuple(dict.fromkeys(from_statuses)),
        ids_file=confine(ids_file)[1] if ids_file is not None else None,
        created_before=resolve_relative(created_before),
        dry_run=dry_run,
        table=spec.name,
        where=tuple((str(k), str(v)) for k, v in pairs),
        updated_before=resolve_relative(updated_before),
    )


_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def resolve_relative(value: str | None, now: datetime | None = None) -> str | None:
    """``30d`` (s, m, h, d, w) -> the UTC ISO timestamp that long before now; others unchanged."""
    found = _RELATIVE.match(value) if value is not None else None
    if found is None:
        return value
    seconds = int(found.group(1)) * _UNIT_S[found.group(2)]
    return ((now or datetime.now(UTC)) - timedelta(seconds=seconds)).isoformat()


def status_of(spec: TargetSpec) -> StatusSpec:
    if spec.status is None:
        raise UsageError(f"{spec.name} declares no status column: it has no status to update")
    return spec.status


def allowed_from(to_status: str, table: str = EXAMPLE_TABLE) -> list[str]:
    """Statuses that may move to ``to_status`` under the target's declared rules."""
    return status_of(targets.get(table)).allowed_from(to_status)


def _filter_value(spec: TargetSpec, name: str, value: str) -> Any:
    """A filter's value, typed as the column (a UsageError names what is wrong)."""
    if name not in spec.file_columns:
        raise UsageError(
            f"--where {name}: {spec.name} has no such column ({', '.join(spec.file_columns)})"
        )
    try:
        return converter(spec.column(name))(value)
    except Invalid as exc:
        raise UsageError(f"--where {name}: {exc.reason}") from None


def _cast(spec: TargetSpec, column: str, param: str) -> str:
    """``:param``, cast to an enum column's type (a text parameter never equals an enum)."""
    own = next((c for c in spec.columns if c.table_column == column), None)
    if own is not None and own.kind == "enum" and own.sql_type != "text":
        return f"CAST(:{param} AS {own.sql_type})"
    return f":{param}"


def _filters(session: Session, p: UpdateParams) -> tuple[str, dict[str, Any]]:
    """The WHERE clause of the selection; every value is a bound parameter.

    A lookup's filter (``category_slug``, ``owner_email``) becomes its foreign
    key = the parent's id, read once here; an unknown parent is a UsageError.
    """
    spec = p.spec()
    status = status_of(spec).column
    clauses: list[str] = ["true"]
    params: dict[str, Any] = {}
    if p.from_statuses:
        own = next(c for c in spec.columns if c.table_column == status)
        array = (
            f"CAST(:from_statuses AS {own.sql_type}[])"
            if own.sql_type != "text"
            else ":from_statuses"
        )
        clauses.append(f"{status} = ANY({array})")
        params["from_statuses"] = list(p.from_statuses)
    by_lookup: dict[str, dict[str, Any]] = {}
    for n, (name, raw) in enumerate(p.where):
        value = _filter_value(spec, name, raw)
        column = spec.column(name)
        if column.table_column is not None:
            clauses.append(f"{column.table_column} = {_cast(spec, column.table_column, f'w{n}')}")
            params[f"w{n}"] = value
            continue
        fk_of = next(x.fk_column for x in spec.lookups if name in x.file_columns)
        by_lookup.setdefault(fk_of, {})[name] = value
    for fk, given in by_lookup.items():
        lk = spec.lookup_of(fk)
        assert lk is not None
        missing = [c for c in lk.file_columns if c not in given]
        if missing:
            raise UsageError(f"--where: give {', '.join(missing)} too (a key of {lk.parent})")
        key = tuple(given[c] for c in lk.file_columns)
        found = lookups.parent_ids(session, spec, lk, [key])
        if key not in found:
            shown = " ".join(f"{c}={given[c]}" for c in lk.file_columns)
            raise UsageError(f"--where {shown}: no {lk.parent} row with that {', '.join(lk.by)}")
        clauses.append(f"{fk} = :{fk}")
        params[fk] = found[key]
    for stamp, value in p.time_filters():
        clauses.append(f"{stamp} < :{stamp}_before")  # a column name checked, never input
        params[f"{stamp}_before"] = parse_timestamp(value)
    return " AND ".join(clauses), params


# Lines of an ids file read, copied and rejected per round trip (bounded memory).
IDS_BATCH = 10_000
_ID_COLUMNS = ("job_id", "line", "row_id")


def _label(spec: TargetSpec) -> str:
    """What a reject calls one row of the target: ``todo`` for todos."""
    t = spec.table.name
    return t[:-1] if t.endswith("s") else t


def _ids_line(number: int, raw_bytes: bytes, label: str) -> tuple[int | None, RejectedRow | None]:
    """(the id, None), (None, a reject) or (None, None) for a blank or comment line."""
    raw = raw_bytes.decode("utf-8", errors="replace").rstrip("\r\n")
    value = raw.strip().lstrip("\ufeff")
    if not value or value.startswith("#"):
        return None, None
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        return None, RejectedRow(number, "id", f"not a {label} id: {value[:60]!r}", raw)
    return int(value), None


def load_ids_file(
    session: Session, job_id: int, path: str, batch: int, label: str
) -> tuple[int, int]:
    """Read the ids file once into ``job_update_ids``; returns (chunks, lines rejected).

    Ids are cut into chunks of ``batch`` in id order (each chunk locks its rows
    in that order); a repeated id is a reject ("duplicate of line N"), as are
    lines that are not ids (``not a {label} id``). Memory stays bounded by
    IDS_BATCH whatever the file.
    """
    real, _ = confine(path)
    rows: list[tuple[int, int, int]] = []
    rejects: list[RejectedRow] = []
    rejected = 0
    with real.open("rb") as f:
        for number, raw_bytes in enumerate(f, start=1):
            row_id, reject = _ids_line(number, raw_bytes, label)
            if row_id is not None:
                rows.append((job_id, number, row_id))
            elif reject is not None:
                rejects.append(reject)
            if len(rows) >= IDS_BATCH:
                copy_rows(session, "bulkops_ledger.job_update_ids", _ID_COLUMNS, rows)
                rows.clear()
            if len(rejects) >= IDS_BATCH:
                ledger.add_rejects(session, job_id, 0, rejects)
                rejected += len(rejects)
                rejects.clear()
    copy_rows(session, "bulkops_ledger.job_update_ids", _ID_COLUMNS, rows)
    ledger.add_rejects(session, job_id, 0, rejects)
    rejected += len(rejects)
    session.execute(
        text(
            "UPDATE bulkops_ledger.job_update_ids u SET "
            "chunk_no = CASE WHEN s.line = s.first THEN CAST((s.rank - 1) / :batch AS int) END, "
            "dup_of = CASE WHEN s.line <> s.first THEN s.first END "
            "FROM (SELECT line, min(line) OVER (PARTITION BY row_id) AS first, "
            "dense_rank() OVER (ORDER BY row_id) AS rank "
            "FROM bulkops_ledger.job_update_ids WHERE job_id = :id) s "
            "WHERE u.job_id = :id AND u.line = s.line"
        ),
        {"id": job_id, "batch": batch},
    )
    after = 0
    while True:
        dups = session.execute(
            text(
                "SELECT line, row_id, dup_of FROM bulkops_ledger.job_update_ids WHERE job_id = :id "
                "AND line > :after AND dup_of IS NOT NULL ORDER BY line LIMIT :n"
            ),
            {"id": job_id, "after": after, "n": IDS_BATCH},
        ).all()
        if not dups:
            break
        ledger.add_rejects(
            session,
            job_id,
            0,
            [
                RejectedRow(int(d.line), "id", f"duplicate of line {d.dup_of}", str(d.row_id))
                for d in dups
            ],
        )
        rejected += len(dups)
        after = int(dups[-1].line)
    chunks = session.execute(
        text(
            "SELECT coalesce(max(chunk_no) + 1, 0) FROM bulkops_ledger.job_update_ids "
            "WHERE job_id = :id"
        ),
        {"id": job_id},
    ).scalar_one()
    return int(chunks), rejected


def _chunk_ids(session: Session, job_id: int, chunk_no: int) -> dict[int, int]:
    """id -> line of one chunk of an ids file."""
    return {
        int(r.row_id): int(r.line)
        for r in session.execute(
            text(
                "SELECT row_id, line FROM bulkops_ledger.job_update_ids "
                "WHERE job_id = :id AND chunk_no = :n"
            ),
            {"id": job_id, "n": chunk_no},
        )
    }


def check_filters(session: Session, p: UpdateParams) -> None:
    """Raise UsageError for a filter naming a parent that does not exist (at submit).

    The one home of that check, for any lookup filter: ``--where category_slug=x``,
    ``--owner EMAIL`` ("no users row with that email").
    """
    if p.where:
        _filters(session, p)


class UpdateOperation:
    kind = JobKind.UPDATE_STATUS.value

    def plan(self, session: Session, job: Job, ready: ReadyFn) -> list[dict[str, Any]]:
        assert job.id is not None
        p = UpdateParams.from_params(job.params)
        where, params = _filters(session, p)
        batch = get_settings().bulkops_update_batch_size
        breakdown = self._breakdown(session, p, where, params) if p.dry_run else None
        if p.ids_file is not None:
            n, rejected = load_ids_file(session, job.id, p.ids_file, batch, _label(p.spec()))
            specs: list[dict[str, Any]] = [{"ids_chunk": k} for k in range(n)]
        else:
            rejected, specs = 0, self._ranges(session, p.spec(), where, params, batch)
        # The job row is written last: cancel waits on it only for the commit.
        if breakdown is not None:
            ledger.set_param(session, job.id, "dry_run_breakdown", breakdown)
        if rejected:
            ledger.add_counts(session, job.id, ChunkCounts(read=rejected, rejected=rejected))
        return specs

    def _ranges(
        self, session: Session, spec: TargetSpec, where: str, params: dict[str, Any], batch: int
    ) -> list[dict[str, Any]]:
        """Keyset ranges of ``batch`` matching ids: only the boundaries are read."""
        t, pk = spec.table.name, spec.pk
        bounds = [
            int(r[0])
            for r in session.execute(
                text(
                    f"SELECT {pk} FROM (SELECT {pk}, row_number() OVER (ORDER BY {pk}) AS n "
                    f"FROM {t} WHERE {where}) s WHERE (n - 1) % :batch = 0 ORDER BY {pk}"
                ),
                {**params, "batch": batch},
            )
        ]
        if not bounds:
            return []
        top = session.execute(text(f"SELECT max({pk}) FROM {t} WHERE {where}"), params).scalar_one()
        ends = [*bounds[1:], int(top) + 1]
        return [{"lo": lo, "hi": hi} for lo, hi in zip(bounds, ends, strict=True)]

    def _breakdown(
        self, session: Session, p: UpdateParams, where: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        """For a dry run: per current status, how many rows and what would happen to them."""
        spec = p.spec()
        allowed = set(allowed_from(p.to_status, p.table))
        sc = status_of(spec).column
        breakdown = {}
        for status, count in session.execute(
            text(f"SELECT {sc}, count(*) FROM {spec.table.name} WHERE {where} GROUP BY {sc}"),
            params,
        ):
            outcome = (
                "unchanged"
                if status == p.to_status
                else "would change"
                if status in allowed
                else "refused"
            )
            breakdown[str(status)] = {"rows": int(count), "outcome": outcome}
        return breakdown

    def run_chunk(self, session: Session, job: Job, spec: dict[str, Any]) -> ChunkResult:
        p = UpdateParams.from_params(job.params)
        target = p.spec()
        t, pk, sc = target.table.name, target.pk, status_of(target).column
        label = _label(target)
        where, params = _filters(session, p)
        session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        lock = "" if p.dry_run else " FOR UPDATE"
        if "ids_chunk" in spec:
            assert job.id is not None
            line_of = _chunk_ids(session, job.id, int(spec["ids_chunk"]))
            found = session.execute(
                text(
                    f"SELECT {pk} AS id, {sc} AS status, ({where}) AS hit FROM {t} "
                    f"WHERE {pk} = ANY(:ids) ORDER BY {pk}{lock}"
                ),
                {**params, "ids": list(line_of)},
            ).all()
            rows = [(int(r.id), str(r.status)) for r in found if r.hit]
            missed = len(found) - len(rows)  # exist, but do not match the filters
            seen = {int(r.id) for r in found}
            rejects = [
                RejectedRow(line, "id", f"no {label} with id {i}", str(i))
                for i, line in sorted(line_of.items(), key=lambda x: x[1])
                if i not in seen
            ]
            read = len(line_of)
        else:
            found = session.execute(
                text(
                    f"SELECT {pk} AS id, {sc} AS status FROM {t} "
                    f"WHERE {pk} >= :lo AND {pk} < :hi AND {where} ORDER BY {pk}{lock}"
                ),
                {**params, "lo": spec["lo"], "hi": spec["hi"]},
            ).all()
            rows = [(int(r.id), str(r.status)) for r in found]
            missed, rejects, line_of, read = 0, [], {}, len(rows)
        allowed = set(allowed_from(p.to_status, p.table))
        change = [i for i, status in rows if status in allowed]
        same = sum(1 for _, status in rows if status == p.to_status)
        rejects += [
            RejectedRow(
                line_of.get(i),
                "status",
                f"{label} {i}: {status} -> {p.to_status} is not an allowed transition",
                str(i),
            )
            for i, status in rows
            if status != p.to_status and status not in allowed
        ]
        if change and not p.dry_run:
            session.execute(
                text(f"UPDATE {t} SET {sc} = {_cast(target, sc, 'to')} WHERE {pk} = ANY(:ids)"),
                {"to": p.to_status, "ids": change},
            )
        counts = ChunkCounts(
            read=read, updated=len(change), skipped=same + missed, rejected=len(rejects)
        )
        assert counts.read == counts.updated + counts.skipped + counts.rejected, counts
        return ChunkResult(counts, rejects)


UPDATE = UpdateOperation()
