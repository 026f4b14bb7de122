"""Export a job's rejected rows in the job's input format, ready to fix and re-import.

CSV: the original columns, then ``_line`` and ``_error``; JSON Lines: the
original object plus ``_line`` and ``_error``. Columns starting with ``_``
are ignored on import, so the fixed file imports as it is.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, TextIO

from worker import ledger
from worker.db import session_scope
from worker.ledger import JobSummary, RejectedRow

EXTRA_COLUMNS = ("_line", "_error")


def _reason(r: RejectedRow) -> str:
    return f"{r.column}: {r.reason}" if r.column else r.reason


def _csv_fields(raw: str | None, width: int) -> list[str]:
    """The record's fields, fitted to ``width`` columns without dropping text.

    A record that is not well-formed CSV keeps its text verbatim in the first column.
    """
    if not raw:
        return [""] * width
    try:
        fields = next(csv.reader([raw], strict=True), [])
    except csv.Error:
        fields = [raw]
    if len(fields) < width:
        fields += [""] * (width - len(fields))
    elif len(fields) > width and width:
        fields = [*fields[: width - 1], ",".join(fields[width - 1 :])]
    return fields


def write_csv(rejects: list[RejectedRow], header: list[str], out: Path | TextIO) -> None:
    if isinstance(out, Path):
        with out.open("w", encoding="utf-8", newline="") as f:
            return write_csv(rejects, header, f)
    base = [i for i, c in enumerate(header) if not c.startswith("_")]
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([header[i] for i in base] + list(EXTRA_COLUMNS))
    for r in rejects:
        fields = _csv_fields(r.raw, len(header))
        writer.writerow([fields[i] for i in base] + [r.line or "", _reason(r)])


def write_jsonl(rejects: list[RejectedRow], out: Path | TextIO) -> None:
    if isinstance(out, Path):
        with out.open("w", encoding="utf-8") as f:
            return write_jsonl(rejects, f)
    for r in rejects:
        obj: dict[str, Any]
        try:
            # As the importer reads it: control characters allowed inside strings.
            parsed = json.loads(r.raw or "", strict=False)
            obj = {k: v for k, v in parsed.items() if not k.startswith("_")}
        except (ValueError, AttributeError):
            obj = {"_raw": r.raw}
        obj["_line"], obj["_error"] = r.line, _reason(r)
        out.write(json.dumps(obj, ensure_ascii=False) + "\n")


def export_rejects(job_id: int, out: Path) -> int:
    """Write the job's rejects to ``out``; returns how many."""
    with session_scope() as session:
        summary, rejects = ledger.read_job_and_rejects(session, job_id)
    write_export(summary, rejects, out)
    return len(rejects)


def export_format(summary: JobSummary) -> str:
    """``csv`` or ``jsonl``: the job's input format, which its export keeps."""
    return "jsonl" if summary.params.get("format") == "jsonl" else "csv"


def write_export(summary: JobSummary, rejects: list[RejectedRow], out: Path | TextIO) -> None:
    """The rejects in the job's input format (its CSV header from the plan)."""
    if export_format(summary) == "jsonl":
        write_jsonl(rejects, out)
    else:
        chunks = summary.params.get("chunks") or [{}]
        write_csv(rejects, chunks[0].get("header") or [], out)
