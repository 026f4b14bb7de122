"""Import jobs: the job task plans the file into byte ranges; each chunk loads one."""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.utils.log import get_task_logger

from tasks import jobs
from worker.app import app
from worker.importer import IMPORT

logger = get_task_logger(__name__)


# send_events=False: Celery would show it SUCCESS once the chunks are sent;
# the job's state is sent for it instead (worker.taskevents).
@app.task(
    name="tasks.imports.run_import", bind=True, max_retries=jobs.MAX_RETRIES, send_events=False
)
def run_import(self: Task, job_id: int) -> None:
    jobs.start(self, job_id, IMPORT, "tasks.imports.import_chunk")


@app.task(name="tasks.imports.import_chunk", bind=True, max_retries=jobs.MAX_RETRIES)
def import_chunk(self: Task, job_id: int, chunk_no: int) -> dict[str, Any]:
    return jobs.chunk(self, job_id, chunk_no, IMPORT)
