"""One frame of ``bulkops jobs --watch`` (pure: rendered from a snapshot)."""

from __future__ import annotations

from dataclasses import replace

from rich.console import Console
from summaries import RUNNING

from worker.watch import Snapshot, render


def _frame(snap: Snapshot) -> str:
    console = Console(width=160, record=True, force_terminal=False)
    console.print(render(snap))
    return console.export_text()


def test_a_frame_shows_progress_rate_rejects_eta_workers_and_failures() -> None:
    failed = replace(RUNNING, id=6, state="failed", error="stopped: too many\nsecond line")
    text = _frame(Snapshot([RUNNING], [failed], [failed], {7: ["w1@host-a", "w2@host-b"]}))
    row = next(line for line in text.splitlines() if "│   7 │" in line)
    for shown in ("running", "3/10", "3,000", "500", "0:00:14", "w1@host-a, w2@host-b"):
        assert shown in row
    assert "job 6 (import)" in text and "stopped: too many" in text
    assert "second line" not in text  # one line per failure


def test_a_frame_without_jobs_says_so_and_a_database_error_is_shown() -> None:
    text = _frame(Snapshot([], [], [], error="database unavailable"))
    assert "no queued or running jobs" in text
    assert "ledger unavailable, retrying: database unavailable" in text
