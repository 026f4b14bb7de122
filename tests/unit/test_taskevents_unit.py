"""The events that make a job's task read as the job in Flower (pure: no broker)."""

from __future__ import annotations

import json
from dataclasses import replace

from celery.events.state import Task
from summaries import RUNNING

from worker.summary import JobSummary
from worker.taskevents import job_event, progress, summary_json


def test_progress_has_chunks_rows_rate_and_eta() -> None:
    p = progress(RUNNING)
    assert (p["chunks_done"], p["chunks_total"]) == (3, 10)
    assert (p["rows_read"], p["rows_rejected"]) == (3000, 10)
    assert p["rows_per_s"] == 500.0
    assert p["eta_s"] == 14.0  # 7 chunks left at 2 s each


def test_progress_before_any_chunk_has_no_rate_nor_eta() -> None:
    p = progress(replace(RUNNING, rows_read=0, chunks_done=0, chunks_total=None, elapsed_s=0.0))
    assert p["rows_per_s"] is None and p["eta_s"] is None


def _flower_record(*summaries: JobSummary) -> Task:
    """The record Celery's event state (what Flower keeps) builds from these events."""
    task = Task(uuid="u")
    task.event("sent", 1.0, 1.0, {"name": "tasks.imports.run_import", "args": "[7]"})
    for i, s in enumerate(summaries):
        type_, fields = job_event(s)
        task.event(type_.removeprefix("task-"), 2.0 + i, 2.0 + i, dict(fields))
    return task


def test_a_running_job_is_progress_with_its_numbers_as_result() -> None:
    record = _flower_record(RUNNING)
    assert record.state == "PROGRESS"
    assert json.loads(record.result) == progress(RUNNING)


def test_final_states_replace_progress_and_carry_the_summary() -> None:
    ok = replace(RUNNING, state="partially_succeeded", chunks_done=10, finished_at="x")
    failed = replace(RUNNING, state="failed", error="stopped: too many rejects")
    cancelled = replace(RUNNING, state="cancelled")
    for final, state in ((ok, "SUCCESS"), (failed, "FAILURE"), (cancelled, "CANCELLED")):
        record = _flower_record(RUNNING, final)
        assert record.state == state
        assert record.result == summary_json(final)
    assert _flower_record(RUNNING, failed).exception == "stopped: too many rejects"
    assert _flower_record(RUNNING, ok).runtime == 6.0


def test_a_late_progress_never_makes_a_finished_job_running() -> None:
    done = replace(RUNNING, state="succeeded", chunks_done=10)
    assert _flower_record(done, RUNNING).state == "SUCCESS"
