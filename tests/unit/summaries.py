"""A running job's summary, as the pure renderers of unit tests take it."""

from __future__ import annotations

from worker.summary import JobSummary

RUNNING = JobSummary(
    id=7,
    kind="import",
    state="running",
    rows_read=3000,
    rows_inserted=2990,
    rows_updated=0,
    rows_skipped=0,
    rows_rejected=10,
    chunks_done=3,
    chunks_total=10,
    elapsed_s=6.0,
    error=None,
    params={"path": "t.csv"},
    created_at="2026-01-01T00:00:00+00:00",
    finished_at=None,
)
