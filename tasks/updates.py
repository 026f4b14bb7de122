"""Bulk status updates: the job task plans keyset batches; each batch is a chunk task."""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.utils.log import get_task_logger

from tasks import jobs
from worker.app import app
from worker.updates import UPDATE

logger = get_task_logger(__name__)


# send_events=False: Celery would show it SUCCESS once the chunks are sent;
# the job's state is sent for it instead (worker.taskevents).
@app.task(
    name="tasks.updates.run_update", bind=True, max_retries=jobs.MAX_RETRIES, send_events=False
)
def run_update(self: Task, job_id: int) -> None:
    jobs.start(self, job_id, UPDATE, "tasks.updates.update_batch")


@app.task(name="tasks.updates.update_batch", bind=True, max_retries=jobs.MAX_RETRIES)
def update_batch(self: Task, job_id: int, chunk_no: int) -> dict[str, Any]:
    return jobs.chunk(self, job_id, chunk_no, UPDATE)
