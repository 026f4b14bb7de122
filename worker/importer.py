"""Imports: plan a file into chunks, validate in Python, load set-based, recover.

A chunk (one transaction) goes through three stages:

1. parse + validate in Python against the target (worker.parsing /
   worker.target_rows), then resolve lookups (parents by natural key, one
   query per chunk and lookup: worker.lookups); bad rows become rejects
   without touching the database;
2. load the rest set-based (worker.loader): an optimistic ``COPY`` straight
   into the table, or, when that meets existing rows, staging + one join to
   find conflicts + ``INSERT … SELECT``;
3. anything still refused is isolated in savepoints: by the line the COPY
   error names, else by bisection.

Every input row ends in exactly one counter: inserted, updated, skipped or
rejected (``read`` is their sum).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session

from worker import duplicates, loader, lookups, parsing, target_rows, targets, uploads
from worker.config import get_settings
from worker.errors import UsageError
from worker.ledger import ChunkCounts, RejectedRow
from worker.models import Job, JobKind
from worker.params import JobParams
from worker.runner import ChunkResult, ReadyFn, chunk_spec
from worker.source import ConfinedFile

MODES = ("insert", "upsert", "skip")


@dataclass(frozen=True)
class ImportParams(JobParams):
    path: str  # relative to the import root
    table: str = targets.EXAMPLE_TABLE
    format: str = "csv"
    mode: str = "insert"
    dry_run: bool = False
    max_errors: int | None = None
    max_error_rate: float | None = None

    def __post_init__(self) -> None:
        targets.get(self.table)  # a UsageError names the known tables
        if self.format not in parsing.FORMATS:
            expected = ", ".join(parsing.FORMATS)
            raise UsageError(f"--format must be one of {expected}, not {self.format!r}")
        if self.mode not in MODES:
            raise UsageError(f"--mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.max_errors is not None and self.max_errors < 0:
            raise UsageError("--max-errors must be 0 or more")
        if self.max_error_rate is not None and not 0 <= self.max_error_rate <= 1:
            raise UsageError("--max-error-rate must be between 0 and 1")


@functools.lru_cache(maxsize=32)
def _validator(target: targets.TargetSpec) -> target_rows.RowValidator:
    """A target's validator, its converters compiled once per process."""
    return target_rows.RowValidator(target)


@functools.lru_cache(maxsize=32)
def _table_spec(target: targets.TargetSpec) -> loader.TableSpec:
    return target.to_table_spec()


def _file_key(target: targets.TargetSpec) -> duplicates.FileKey:
    return duplicates.FileKey(target.key_file_columns, target_rows.raw_key_maker(target))


def _drained(items: list[Any]) -> Iterator[Any]:
    """The items in order, each let go of by the list once yielded (peak memory of a chunk:
    a record's parsed values are garbage as soon as it is validated)."""
    items.reverse()
    while items:
        yield items.pop()


def guess_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    return "jsonl" if suffix in {".jsonl", ".ndjson", ".json"} else "csv"


class ImportOperation:
    kind = JobKind.IMPORT.value

    def plan(self, session: Session, job: Job, ready: ReadyFn) -> list[dict[str, Any]]:
        job_id = job.id
        assert job_id is not None
        p = ImportParams.from_params(job.params)
        real = uploads.open_source(job.params)
        identity = real.identity.to_json() if isinstance(real, ConfinedFile) else None
        header, _ = parsing.read_header(real, p.format)
        target = targets.get(p.table)
        if p.format == "csv":
            target_rows.check_header(target, header)

        def spec(s: parsing.ChunkSpan) -> dict[str, Any]:
            first = s.chunk_no == 0
            return {
                "chunk_no": s.chunk_no,
                "start": s.start,
                "end": s.end,
                "first_line": s.first_line,
                "records": s.records,
                "header": header if first else None,
                # what the file was when planned: every chunk checks it is still that file
                "identity": identity if first else None,
            }

        def early(s: parsing.ChunkSpan, repeated: list[duplicates.KeyRow]) -> None:
            ready(spec(s), lambda own: duplicates.add_early(own, job_id, repeated))

        spans = duplicates.plan(
            session,
            job_id,
            real,
            p.format,
            header,
            _file_key(target),
            get_settings().bulkops_chunk_size,
            # upsert: a line's fate depends on the lines after it, so every chunk waits
            early if p.mode != "upsert" else None,
        )
        return [spec(s) for s in spans]

    def run_chunk(self, session: Session, job: Job, spec: dict[str, Any]) -> ChunkResult:
        assert job.id is not None
        p = ImportParams.from_params(job.params)
        first = chunk_spec(job.params, 0) or {}
        real = uploads.open_source(job.params, expect=first.get("identity"))
        header = first["header"] or []
        span = parsing.ChunkSpan(
            chunk_no=int(spec["chunk_no"]),
            start=int(spec["start"]),
            end=int(spec["end"]),
            first_line=int(spec["first_line"]),
            records=int(spec["records"]),
        )
        records = list(parsing.read_chunk(real, p.format, span, header))
        read = len(records)
        target = targets.get(p.table)
        validator = _validator(target)
        rows, errors = validator.validate(_drained(records), dedupe=False)
        resolved, unknown = lookups.resolve(session, target, rows)  # parents by natural key
        errors += unknown
        if len(resolved) < len(rows):  # some parents unknown: the others, in order
            by_line = {r.line: r for r in rows}
            rows = [by_line[line] for line, _ in resolved]
            del by_line

        def reread(spans: list[tuple[int, int, int]]) -> dict[int, Any]:
            others = duplicates.read_records(real, p.format, header, spans)
            return {r.line: r for r in validator.validate(others, dedupe=False)[0]}

        decision = duplicates.decide(
            session,
            job.id,
            span.chunk_no,
            rows,
            p.mode,
            lambda r: validator.key(r.values),
            reread,
            target.key_file_columns[0],
        )
        raw = {r.line: r.raw for r in decision.keep}
        everything = len(raw) == len(resolved)  # no line of the chunk lost to a duplicate
        load = resolved if everything else [record for record in resolved if record[0] in raw]
        # Peak memory: the typed rows live on in ``load``, their parents resolved.
        decision.keep.clear()
        del rows, resolved
        outcome = loader.load(session, _table_spec(target), load, raw, p.mode, p.dry_run)
        rejects = [RejectedRow(e.line, e.column, e.reason, e.raw) for e in errors]
        rejects += decision.rejects + outcome.rejects
        counts = ChunkCounts(
            read=read,
            inserted=outcome.inserted,
            updated=outcome.updated,
            skipped=outcome.skipped + decision.superseded,
            rejected=len(rejects),
        )
        assert counts.read == counts.inserted + counts.updated + counts.skipped + counts.rejected, (
            f"row accounting broken: {counts}"
        )
        return ChunkResult(counts, rejects)


IMPORT = ImportOperation()
