"""``bulkops jobs --watch``: a live table of queued and running jobs, for a plain terminal.

Read from the ledger only (no Flower, no broker), a few times a second, with
Rich's ``Live`` redrawing in place (no alternate screen, so it works over SSH
and leaves the last frame in the scrollback). Rate and ETA are those Flower
shows (:func:`worker.taskevents.progress`). Ctrl-C ends it with exit code 0.
On something that is not a terminal it prints one frame and returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from worker import chunks, ledger
from worker.errors import BulkopsError
from worker.models import JobState
from worker.summary import JobSummary
from worker.taskevents import progress

ACTIVE = (JobState.QUEUED.value, JobState.RUNNING.value, JobState.CANCELLING.value)
FINISHED = (
    JobState.SUCCEEDED.value,
    JobState.PARTIALLY_SUCCEEDED.value,
    JobState.FAILED.value,
    JobState.CANCELLED.value,
)
REFRESH_PER_S = 4
STATE_STYLE = {
    "queued": "dim",
    "running": "cyan",
    "cancelling": "yellow",
    "succeeded": "green",
    "partially_succeeded": "yellow",
    "failed": "bold red",
    "cancelled": "magenta",
}


@dataclass(frozen=True)
class Snapshot:
    """What the view shows, read at ``at``."""

    active: list[JobSummary]
    finished: list[JobSummary]
    failures: list[JobSummary]
    workers: dict[int, list[str]] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    error: str | None = None


def snapshot(limit: int = 20, recent: int = 5) -> Snapshot:
    """Jobs queued or running (newest first), the last finished ones and the last failures."""
    active = ledger.jobs_in(ACTIVE, limit)
    finished = ledger.jobs_in(FINISHED, recent)
    failures = ledger.jobs_in((JobState.FAILED.value,), recent)
    return Snapshot(active, finished, failures, chunks.workers_of([s.id for s in active]))


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    value = int(round(value))
    return f"{value // 3600}:{value // 60 % 60:02d}:{value % 60:02d}"


def _state(state: str) -> Text:
    return Text(state, style=STATE_STYLE.get(state, ""))


def _active_table(snap: Snapshot) -> RenderableType:
    if not snap.active:
        return Text("no queued or running jobs", style="dim")
    table = Table(title="queued and running jobs", title_justify="left", expand=False)
    for name, justify in (
        ("job", "right"),
        ("kind", "left"),
        ("state", "left"),
        ("progress", "left"),
        ("chunks", "right"),
        ("rows", "right"),
        ("rows/s", "right"),
        ("rejects", "right"),
        ("ETA", "right"),
        ("workers", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=name != "workers")  # type: ignore[arg-type]
    for s in snap.active:
        p = progress(s)
        total = s.chunks_total
        bar = ProgressBar(total=float(total or 1), completed=float(s.chunks_done), width=20)
        if total is None:  # not planned yet: an empty bar, no pulse (calm over SSH)
            bar = ProgressBar(total=1.0, completed=0.0, width=20)
        rate = p["rows_per_s"]
        table.add_row(
            str(s.id),
            s.kind,
            _state(s.state),
            bar,
            f"{s.chunks_done}/{total if total is not None else '?'}",
            f"{s.rows_read:,}",
            f"{rate:,.0f}" if rate is not None else "-",
            f"{s.rows_rejected:,}",
            _seconds(p["eta_s"]),
            ", ".join(snap.workers.get(s.id, [])) or "-",
        )
    return table


def _finished_table(snap: Snapshot) -> Table:
    table = Table(title="recently finished", title_justify="left")
    for name in ("job", "kind", "state", "rows", "rejects", "elapsed"):
        table.add_column(name, justify="left" if name in ("kind", "state") else "right")
    for s in snap.finished:
        table.add_row(
            str(s.id),
            s.kind,
            _state(s.state),
            f"{s.rows_read:,}",
            f"{s.rows_rejected:,}",
            _seconds(s.elapsed_s),
        )
    return table


def _failures(snap: Snapshot) -> RenderableType:
    lines = Text("recent failures\n", style="bold")
    for s in snap.failures:
        lines.append(f"job {s.id} ({s.kind}) at {s.finished_at or '?'}: ", style="red")
        lines.append(f"{(s.error or '').splitlines()[0] if s.error else '-'}\n")
    if not snap.failures:
        lines.append("none\n", style="dim")
    return lines


def render(snap: Snapshot) -> RenderableType:
    """One frame of the view."""
    head = Text(f"bulkops jobs at {snap.at:%Y-%m-%d %H:%M:%S} UTC  (Ctrl-C to quit)")
    parts: list[RenderableType] = [head]
    if snap.error:
        parts.append(Text(f"ledger unavailable, retrying: {snap.error}", style="bold red"))
    parts += [_active_table(snap), _finished_table(snap), _failures(snap)]
    return Group(*parts)


def _read(last: Snapshot | None, limit: int) -> Snapshot:
    """A fresh snapshot; while the database is away, the last one with the error."""
    try:
        return snapshot(limit)
    except BulkopsError as exc:
        if last is None:
            raise
        return Snapshot(last.active, last.finished, last.failures, last.workers, error=exc.message)


def run(console: Console, interval_s: float = 0.5, limit: int = 20, once: bool = False) -> int:
    """Show the view until Ctrl-C (or one frame when ``once`` or not on a terminal)."""
    snap = _read(None, limit)
    if once or not console.is_terminal:
        console.print(render(snap))
        return 0
    try:
        with Live(render(snap), console=console, refresh_per_second=REFRESH_PER_S) as live:
            while True:
                time.sleep(interval_s)
                snap = _read(snap, limit)
                live.update(render(snap))
    except KeyboardInterrupt:
        pass
    return 0
