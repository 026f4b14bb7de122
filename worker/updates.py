"""Bulk status updates: filtered, in keyset batches, with transition rules.

The plan walks the matching ids once in primary-key order and cuts them into
batches of ``BULKOPS_UPDATE_BATCH_SIZE`` (only the boundaries are kept, so a
filter matching millions is never held in memory). Each batch is one chunk:
its own short transaction that locks its rows in primary-key order (so two
jobs touching the same rows wait instead of deadlocking), refuses the
transitions the rules forbid, and updates the rest in one statement. A
redelivered job skips the batches already committed.

Every selected row is counted once: updated, skipped (already in the target
status, or an id that no longer matches the filters), or rejected (the
transition is not allowed, the id does not exist, the line is not an id).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlmodel import Session

from worker import ledger
from worker.config import get_settings
from worker.errors import UsageError
from worker.importer import confine
from worker.ledger import ChunkCounts, RejectedRow
from worker.models import STATUSES, TRANSITIONS, Job, JobKind
from worker.runner import ChunkResult
from worker.validation import parse_timestamp

# A batch waits at most this long for a row lock; then it is retried (retryable).
LOCK_TIMEOUT = "5s"


@dataclass(frozen=True)
class UpdateParams:
    to_status: str
    from_statuses: tuple[str, ...] = ()
    owner_email: str | None = None
    ids_file: str | None = None  # relative to the import root
    created_before: str | None = None  # ISO 8601, normalised to UTC
    dry_run: bool = False

    def __post_init__(self) -> None:
        for status in (self.to_status, *self.from_statuses):
            if status not in STATUSES:
                raise UsageError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
        if self.created_before is not None:
            try:
                parse_timestamp(self.created_before)
            except ValueError:
                raise UsageError(
                    f"--created-before {self.created_before!r} is not an ISO 8601 timestamp"
                ) from None

    def to_params(self) -> dict[str, Any]:
        return {
            "to_status": self.to_status,
            "from_statuses": list(self.from_statuses),
            "owner_email": self.owner_email,
            "ids_file": self.ids_file,
            "created_before": self.created_before,
            "dry_run": self.dry_run,
        }

    @classmethod
    def from_job(cls, job: Job) -> UpdateParams:
        p = job.params
        return cls(
            to_status=p["to_status"],
            from_statuses=tuple(p.get("from_statuses") or ()),
            owner_email=p.get("owner_email"),
            ids_file=p.get("ids_file"),
            created_before=p.get("created_before"),
            dry_run=bool(p.get("dry_run")),
        )


def allowed_from(to_status: str) -> list[str]:
    """Statuses that may move to ``to_status`` under the declared rules."""
    return [s for s, targets in TRANSITIONS.items() if to_status in targets]


def _filters(p: UpdateParams, owner_id: int | None) -> tuple[str, dict[str, Any]]:
    """The WHERE clause of the selection; every value is a bound parameter."""
    clauses: list[str] = ["true"]
    params: dict[str, Any] = {}
    if p.from_statuses:
        clauses.append("status = ANY(:from_statuses)")
        params["from_statuses"] = list(p.from_statuses)
    if owner_id is not None:
        clauses.append("owner_id = :owner_id")
        params["owner_id"] = owner_id
    if p.created_before:
        clauses.append("created_at < :created_before")
        params["created_before"] = parse_timestamp(p.created_before)
    return " AND ".join(clauses), params


def _owner_id(session: Session, email: str | None) -> int | None:
    if email is None:
        return None
    owner = session.execute(
        text("SELECT id FROM users WHERE email = :e"), {"e": email.strip().lower()}
    ).scalar()
    if owner is None:
        raise UsageError(f"--owner {email!r}: no user with that email")
    return int(owner)


def read_ids_file(path: str) -> tuple[list[tuple[int, int]], list[RejectedRow]]:
    """(id, line) pairs in file order, and rejects for lines that are not new ids."""
    real, _ = confine(path)
    pairs: list[tuple[int, int]] = []
    rejects: list[RejectedRow] = []
    first_line: dict[int, int] = {}
    with real.open("rb") as f:
        for number, raw_bytes in enumerate(f, start=1):
            raw = raw_bytes.decode("utf-8", errors="replace").rstrip("\r\n")
            value = raw.strip().lstrip("\ufeff")
            if not value or value.startswith("#"):
                continue
            if not value.isascii() or not value.isdigit() or len(value) > 18:
                rejects.append(RejectedRow(number, "id", f"not a todo id: {value[:60]!r}", raw))
            elif int(value) in first_line:
                reason = f"duplicate of line {first_line[int(value)]}"
                rejects.append(RejectedRow(number, "id", reason, raw))
            else:
                first_line[int(value)] = number
                pairs.append((int(value), number))
    return pairs, rejects


class UpdateOperation:
    kind = JobKind.UPDATE_STATUS.value

    def plan(self, session: Session, job: Job) -> list[dict[str, Any]]:
        assert job.id is not None
        p = UpdateParams.from_job(job)
        where, params = _filters(p, _owner_id(session, p.owner_email))
        batch = get_settings().bulkops_update_batch_size
        if p.dry_run:
            self._store_breakdown(session, job.id, p, where, params)
        if p.ids_file is not None:
            pairs, rejects = read_ids_file(p.ids_file)
            ledger.add_rejects(session, job.id, 0, rejects)
            n = len(rejects)
            ledger.add_counts(session, job.id, ChunkCounts(read=n, rejected=n))
            pairs.sort()
            return [{"ids": pairs[i : i + batch]} for i in range(0, len(pairs), batch)]
        bounds = [
            int(r[0])
            for r in session.execute(
                text(
                    f"SELECT id FROM (SELECT id, row_number() OVER (ORDER BY id) AS n "
                    f"FROM todos WHERE {where}) s WHERE n % :batch = 1 ORDER BY id"
                ),
                {**params, "batch": batch},
            )
        ]
        if not bounds:
            return []
        top = session.execute(text(f"SELECT max(id) FROM todos WHERE {where}"), params).scalar_one()
        ends = [*bounds[1:], int(top) + 1]
        return [{"lo": lo, "hi": hi} for lo, hi in zip(bounds, ends, strict=True)]

    def _store_breakdown(
        self, session: Session, job_id: int, p: UpdateParams, where: str, params: dict[str, Any]
    ) -> None:
        """For a dry run: per current status, how many rows and what would happen to them."""
        allowed = set(allowed_from(p.to_status))
        breakdown = {}
        for status, count in session.execute(
            text(f"SELECT status, count(*) FROM todos WHERE {where} GROUP BY status"), params
        ):
            outcome = (
                "unchanged"
                if status == p.to_status
                else "would change"
                if status in allowed
                else "refused"
            )
            breakdown[str(status)] = {"rows": int(count), "outcome": outcome}
        session.execute(
            text(
                "UPDATE jobs SET params = params || jsonb_build_object('dry_run_breakdown', "
                "CAST(:b AS jsonb)) WHERE id = :id"
            ),
            {"id": job_id, "b": ledger.to_json(breakdown)},
        )

    def run_chunk(self, session: Session, job: Job, spec: dict[str, Any]) -> ChunkResult:
        p = UpdateParams.from_job(job)
        where, params = _filters(p, _owner_id(session, p.owner_email))
        session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        lock = "" if p.dry_run else " FOR UPDATE"
        if "ids" in spec:
            line_of = {int(i): int(line) for i, line in spec["ids"]}
            found = session.execute(
                text(
                    f"SELECT id, status, ({where}) AS hit FROM todos "
                    f"WHERE id = ANY(:ids) ORDER BY id{lock}"
                ),
                {**params, "ids": list(line_of)},
            ).all()
            rows = [(int(r.id), str(r.status)) for r in found if r.hit]
            missed = len(found) - len(rows)  # exist, but do not match the filters
            seen = {int(r.id) for r in found}
            rejects = [
                RejectedRow(line, "id", f"no todo with id {i}", str(i))
                for i, line in sorted(line_of.items(), key=lambda x: x[1])
                if i not in seen
            ]
            read = len(line_of)
        else:
            found = session.execute(
                text(
                    f"SELECT id, status FROM todos WHERE id >= :lo AND id < :hi AND {where} "
                    f"ORDER BY id{lock}"
                ),
                {**params, "lo": spec["lo"], "hi": spec["hi"]},
            ).all()
            rows = [(int(r.id), str(r.status)) for r in found]
            missed, rejects, line_of, read = 0, [], {}, len(rows)
        allowed = set(allowed_from(p.to_status))
        change = [i for i, status in rows if status in allowed]
        same = sum(1 for _, status in rows if status == p.to_status)
        rejects += [
            RejectedRow(
                line_of.get(i),
                "status",
                f"todo {i}: {status} -> {p.to_status} is not an allowed transition",
                str(i),
            )
            for i, status in rows
            if status != p.to_status and status not in allowed
        ]
        if change and not p.dry_run:
            session.execute(
                text("UPDATE todos SET status = :to WHERE id = ANY(:ids)"),
                {"to": p.to_status, "ids": change},
            )
        counts = ChunkCounts(
            read=read, updated=len(change), skipped=same + missed, rejected=len(rejects)
        )
        assert counts.read == counts.updated + counts.skipped + counts.rejected, counts
        return ChunkResult(counts, rejects)


UPDATE = UpdateOperation()
