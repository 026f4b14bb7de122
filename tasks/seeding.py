"""Seeding jobs: the job task plans and fans out; each chunk seeds a block of one target's rows."""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.utils.log import get_task_logger

from tasks import jobs
from worker.app import app
from worker.seeding import SEED

logger = get_task_logger(__name__)


# send_events=False: Celery would show it SUCCESS once the chunks are sent;
# the job's state is sent for it instead (worker.taskevents).
@app.task(
    name="tasks.seeding.run_seed", bind=True, max_retries=jobs.MAX_RETRIES, send_events=False
)
def run_seed(self: Task, job_id: int) -> None:
    jobs.start(self, job_id, SEED, "tasks.seeding.seed_chunk")


@app.task(name="tasks.seeding.seed_chunk", bind=True, max_retries=jobs.MAX_RETRIES)
def seed_chunk(self: Task, job_id: int, chunk_no: int) -> dict[str, Any]:
    return jobs.chunk(self, job_id, chunk_no, SEED)
