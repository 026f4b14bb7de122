"""Recovery of stuck jobs (celery beat, ``maintenance`` queue)."""

from __future__ import annotations

from typing import Any

from celery.utils.log import get_task_logger

from worker.app import app
from worker.client import send_job
from worker.config import get_settings
from worker.recovery import recover_stuck_jobs as recover

logger = get_task_logger(__name__)


@app.task(name="tasks.maintenance.recover_stuck_jobs")
def recover_stuck_jobs() -> dict[str, Any]:
    s = get_settings()
    report = recover(s.bulkops_stuck_after_s, s.bulkops_max_attempts, send_job)
    return {"resent": report.resent, "failed": report.failed}
