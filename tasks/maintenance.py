"""Recovery of stuck jobs and dead chunks (celery beat, ``maintenance`` queue)."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from celery.utils.log import get_task_logger

from worker import taskevents
from worker.app import app
from worker.client import JOB_TASKS, send_job
from worker.config import get_settings
from worker.models import JobKind
from worker.orphans import restore_orphans
from worker.queues import IMPORTS, UPDATES
from worker.recovery import recover_stuck_jobs as recover

logger = get_task_logger(__name__)

# Job kind -> (its chunk task, that task's queue).
CHUNK_TASKS: dict[str, tuple[str, str]] = {
    JobKind.SEED: ("tasks.seeding.seed_chunk", IMPORTS),
    JobKind.IMPORT: ("tasks.imports.import_chunk", IMPORTS),
    JobKind.UPDATE_STATUS: ("tasks.updates.update_batch", UPDATES),
}


def send_chunk(app: Celery, kind: str, job_id: int, chunk_no: int) -> None:
    """Send a dead chunk's task again (job id and chunk number only, JSON)."""
    name, queue = CHUNK_TASKS[kind]
    kwargs = {"job_id": job_id, "chunk_no": chunk_no}  # searchable in Flower, as tasks.jobs sends
    app.send_task(name, kwargs=kwargs, queue=queue, ignore_result=True)


# The ledger's tasks: a second delivery of any of them is a no-op.
JOB_TASK_NAMES = frozenset(name for name, _ in JOB_TASKS.values())
LEDGER_TASKS = JOB_TASK_NAMES | {name for name, _ in CHUNK_TASKS.values()}


@app.task(name="tasks.maintenance.recover_stuck_jobs", bind=True)
def recover_stuck_jobs(self: Task) -> dict[str, Any]:
    """Hand back what dead workers held, then send again what the ledger finds dead or stuck."""
    s = get_settings()
    try:
        orphans = restore_orphans(self.app, LEDGER_TASKS)
    except Exception as exc:  # the ledger's recovery below must run whatever Redis says
        logger.warning("dead workers' messages not restored: %s", exc)
        orphans = []
    # What was restored is sent already: the ledger's re-send would be a duplicate
    # whose delivery waits on the live chunk's lock (HOLDER_GRACE_S) for nothing.
    jobs = {o.args[0] for o in orphans if o.task in JOB_TASK_NAMES and o.args}
    chunks = {tuple(o.args[:2]) for o in orphans if o.task not in JOB_TASK_NAMES}

    def resend_job(kind: str, job_id: int, task_id: str) -> None:
        if job_id not in jobs:
            send_job(kind, job_id, task_id, self.app)

    def resend_chunk(kind: str, job_id: int, chunk_no: int) -> None:
        if (job_id, chunk_no) not in chunks:
            send_chunk(self.app, kind, job_id, chunk_no)

    report = recover(s.bulkops_stuck_after_s, s.bulkops_max_attempts, resend_job, resend_chunk)
    # jobs recovery ended (poison plans failed, cancels settled): Flower shows their end
    ended = [*report.failed, *report.cancelled]
    taskevents.send_job_states(ended, self.request.hostname, self.app)
    return {
        "resent": report.resent,
        "failed": report.failed,
        "chunks": [list(c) for c in report.chunks],
        "cancelled": report.cancelled,
        "restored": [[o.task, *o.args] for o in orphans],
        "pruned": report.pruned,
    }
