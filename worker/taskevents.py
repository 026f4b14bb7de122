"""The job as Flower sees it: Celery task events sent with the uuid of the job's own task.

Flower keeps a record per task uuid, built by Celery's ``events.state`` from
the events that carry that uuid: an event type Celery does not know becomes
the task's state (``task-progress`` -> PROGRESS, ``task-cancelled`` ->
CANCELLED), and an event's fields are merged into the record. Flower's API
and task page show only Celery's own fields of a record (``result``,
``exception``, ``runtime``, ...), so the progress travels as the task's
``result``: a JSON object. ``update_state`` meta is never shown by Flower.

The worker's own events for a job task are switched off (its task has
``send_events=False``): Celery would report SUCCESS as soon as the chunks
are sent. The job's state is sent instead by whoever changes it: the job task
when it stops, each chunk task when it ends, ``cancel`` and recovery. Celery's
state merge lets nothing that ranks lower replace the state SUCCESS or FAILURE,
but it still merges a late event's fields (a PROGRESS's ``result``) into the
record; so a sender of PROGRESS reads the job's state again after sending, and
sends the final event itself if the job finished meanwhile. Whoever finishes
the job later sends after it: the final event is always the last one Flower
receives. A cancelled job is CANCELLED, a custom state: REVOKED ranks below
every custom state in Celery's precedence and would not replace PROGRESS.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable
from typing import Any

from worker import ledger
from worker.models import FINISHED_STATES, JobState
from worker.summary import JobSummary

logger = logging.getLogger(__name__)

PROGRESS_EVENT = "task-progress"
CANCELLED_EVENT = "task-cancelled"


def summary_json(summary: JobSummary) -> str:
    """The job's summary exactly as ``bulkops job --json`` prints it."""
    return json.dumps(summary.to_dict(), default=str)


def progress(summary: JobSummary) -> dict[str, Any]:
    """How far a job is: chunks and rows so far, rows/s and the ETA (seconds) from them."""
    elapsed = summary.elapsed_s or 0.0
    done, total = summary.chunks_done, summary.chunks_total
    rate = round(summary.rows_read / elapsed, 1) if elapsed > 0 else None
    eta = None
    if total is not None and done > 0 and elapsed > 0:
        eta = round(elapsed * max(total - done, 0) / done, 1)
    return {
        "job_id": summary.id,
        "kind": summary.kind,
        "job_state": summary.state,
        "chunks_done": done,
        "chunks_total": total,
        "rows_read": summary.rows_read,
        "rows_rejected": summary.rows_rejected,
        "rows_per_s": rate,
        "eta_s": eta,
        "elapsed_s": summary.elapsed_s,
    }


def job_event(summary: JobSummary) -> tuple[str, dict[str, Any]]:
    """The event type and fields that make the job's task read as the job now."""
    state = summary.state
    if state in (JobState.SUCCEEDED, JobState.PARTIALLY_SUCCEEDED):
        return "task-succeeded", {"result": summary_json(summary), "runtime": summary.elapsed_s}
    if state == JobState.FAILED:
        return "task-failed", {
            "exception": summary.error or "failed",
            "traceback": None,
            "result": summary_json(summary),
        }
    if state == JobState.CANCELLED:
        return CANCELLED_EVENT, {"result": summary_json(summary)}
    fields = progress(summary)
    return PROGRESS_EVENT, {"result": json.dumps(fields), **fields}


def send_job_state(job_id: int, hostname: str | None = None, app: Any = None) -> str | None:
    """Send the job's state now to Flower, as an event of the job's task; the event type sent.

    Best effort: the ledger is the truth, an event lost is only a stale view.
    ``hostname`` names the worker that sends it (Flower shows it on the task).
    """
    try:
        task_id = ledger.celery_task_id(job_id)
        if not task_id:
            return None
        if app is None:
            from worker.app import producer_app

            app = producer_app()
        with app.events.default_dispatcher(hostname=hostname) as dispatcher:
            type_, fields = job_event(ledger.get_summary(job_id))
            dispatcher.send(type_, uuid=task_id, **fields)
            if type_ == PROGRESS_EVENT and ledger.state_of(job_id) in FINISHED_STATES:
                # finished while this PROGRESS was on its way: the final event goes after it
                type_, fields = job_event(ledger.get_summary(job_id))
                dispatcher.send(type_, uuid=task_id, **fields)
        return type_
    except Exception as exc:
        logger.warning("job state not sent to Flower: %s", exc, extra={"job_id": job_id})
        return None


def send_job_states(job_ids: Iterable[int], hostname: str | None = None, app: Any = None) -> None:
    """:func:`send_job_state` for each job (recovery changed them)."""
    for job_id in job_ids:
        with contextlib.suppress(Exception):
            send_job_state(job_id, hostname, app)
