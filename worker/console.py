"""A job on the terminal: its one-line summary on stdout, a progress bar on stderr.

Shared by the ``bulkops`` commands and the demo, so a job reads the same everywhere.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from worker import client
from worker.summary import JobSummary

err = Console(stderr=True, soft_wrap=True)


def print_summary(s: JobSummary, title: str | None = None) -> None:
    """One line: state, counters, chunks, elapsed (``title``: what the job was for)."""
    lead = f"{title:<16} " if title else ""
    err_line = f"  error: {s.error}" if s.error else ""
    typer.echo(
        f"{lead}job {s.id} ({s.kind}): {s.state}  read={s.rows_read} inserted={s.rows_inserted} "
        f"updated={s.rows_updated} skipped={s.rows_skipped} rejected={s.rows_rejected} "
        f"chunks={s.chunks_done}/{s.chunks_total if s.chunks_total is not None else '?'} "
        f"elapsed={s.elapsed_s if s.elapsed_s is not None else '-'}s" + err_line
    )


def wait_with_progress(job_id: int, show: bool = True) -> JobSummary:
    """Wait for a job, with a progress bar (chunks, rows/s, ETA) on stderr."""
    if not show or not err.is_terminal:
        return client.wait(job_id)
    columns = (
        TextColumn("job {task.fields[job]} {task.fields[state]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chunks  {task.fields[rows]} rows  {task.fields[rate]} rows/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("job", total=None, job=job_id, state="queued", rows=0, rate="-")

        def update(s: JobSummary) -> None:
            rate = f"{s.rows_read / s.elapsed_s:,.0f}" if s.elapsed_s else "-"
            bar.update(
                task,
                total=s.chunks_total,
                completed=s.chunks_done,
                state=s.state,
                rows=f"{s.rows_read:,}",
                rate=rate,
            )

        return client.wait(job_id, on_progress=update)
