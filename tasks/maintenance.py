"""Recovery of stuck jobs and dead chunks (celery beat, ``maintenance`` queue)."""

from __future__ import annotations

from typing import Any

from celery.utils.log import get_task_logger

from worker import taskevents
from worker.app import app
from worker.client import send_job
from worker.config import get_settings
from worker.models import JobKind
from worker.queues import IMPORTS, UPDATES
from worker.recovery import recover_stuck_jobs as recover

logger = get_task_logger(__name__)

# Job kind -> (its chunk task, that task's queue).
CHUNK_TASKS: dict[str, tuple[str, str]] = {
    JobKind.SEED: ("tasks.seeding.seed_chunk", IMPORTS),
    JobKind.IMPORT: ("tasks.imports.import_chunk", IMPORTS),
    JobKind.UPDATE_STATUS: ("tasks.updates.update_batch", UPDATES),
}


def send_chunk(kind: str, job_id: int, chunk_no: int) -> None:
    """Send a dead chunk's task again (job id and chunk number only, JSON)."""
    name, queue = CHUNK_TASKS[kind]
    kwargs = {"job_id": job_id, "chunk_no": chunk_no}  # searchable in Flower, as tasks.jobs sends
    app.send_task(name, kwargs=kwargs, queue=queue, ignore_result=True)


@app.task(name="tasks.maintenance.recover_stuck_jobs")
def recover_stuck_jobs() -> dict[str, Any]:
    s = get_settings()
    report = recover(s.bulkops_stuck_after_s, s.bulkops_max_attempts, send_job, send_chunk)
    # jobs recovery ended (poison plans failed, cancels settled): Flower shows their end
    ended = [*report.failed, *report.cancelled]
    taskevents.send_job_states(ended, recover_stuck_jobs.request.hostname)
    return {
        "resent": report.resent,
        "failed": report.failed,
        "chunks": [list(c) for c in report.chunks],
        "cancelled": report.cancelled,
    }
