"""What every job task does around its one call into ``worker``: retry or fail, progress.

Retry policy comes from the error tree: a RetryableError is retried with
exponential backoff (bounded), a PermanentError fails the job at once. A chunk
stopped by the soft time limit rolled back its transaction, so it is retried
like a transient error without doubling rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.log import get_task_logger
from kombu.exceptions import KombuError

from worker import ledger, runner, taskevents, uploads
from worker.errors import BrokerUnavailable, BulkopsError, RetryableError
from worker.models import JobState

logger = get_task_logger(__name__)

MAX_RETRIES = 5  # transient failures per task before the job is failed
BACKOFF_BASE_S = 2  # 2, 4, 8, 16, 32 seconds
BACKOFF_MAX_S = 60


def backoff(retries: int) -> int:
    return int(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**retries))


@contextlib.contextmanager
def job_errors(task: Task, job_id: int) -> Iterator[None]:
    """Turn what the block raises into a retry (transient) or a failed job (permanent)."""
    try:
        yield
    except (RetryableError, SoftTimeLimitExceeded) as exc:
        retries = task.request.retries
        if retries < MAX_RETRIES:
            logger.warning(
                "transient failure, retrying: %s", exc, extra={"job_id": job_id, "retry": retries}
            )
            raise task.retry(countdown=backoff(retries), exc=exc) from exc
        ledger.fail(job_id, f"gave up after {MAX_RETRIES} retries: {exc}")
        raise
    except BulkopsError as exc:
        logger.error("job failed: %s", exc.message, extra={"job_id": job_id})
        ledger.fail(job_id, exc)
    except Exception as exc:
        logger.exception("job failed on an unexpected error", extra={"job_id": job_id})
        ledger.fail(job_id, f"internal error: {type(exc).__name__}: {exc}")
        raise


def send_chunk(chunk_task: Task, job_id: int, chunk_no: int) -> None:
    """Send one chunk task; an unreachable Redis is BrokerUnavailable (retryable)."""
    try:
        # keyword arguments: an operator finds a job's chunks in Flower with
        # ``kwargs:job_id=12`` (and one chunk with ``kwargs:chunk_no=3``)
        chunk_task.apply_async(kwargs={"job_id": job_id, "chunk_no": chunk_no})
    except (KombuError, OSError, RuntimeError, AttributeError) as exc:
        # AttributeError: kombu's Redis transport, retrying a send while Redis
        # restarts, can fail inside itself ('NoneType' object has no attribute
        # 'client'); it is the same lost broker.
        raise BrokerUnavailable(f"cannot send chunk {chunk_no} of job {job_id}: {exc}") from exc


def start(task: Task, job_id: int, operation: runner.Operation, chunk_name: str) -> None:
    """The job task: claim, plan, enqueue the chunk tasks (``chunk_name``, on the task's app).

    If Redis goes away while the chunks fan out, the job is queued again and the
    task retried; the retry (or recovery, if Redis also lost the retry) sends only
    the chunks not yet committed nor running.
    """

    chunk_task = task.app.tasks[chunk_name]  # the app running this task, not worker.app's

    def enqueue(jid: int, chunk_no: int) -> None:
        send_chunk(chunk_task, jid, chunk_no)

    # The job task sends no events of its own (send_events=False, see
    # worker.taskevents): it is RECEIVED and STARTED now and, when it stops,
    # whatever the job is.
    with contextlib.suppress(Exception):
        task.send_event(
            "task-received",
            name=task.name,
            args=repr([job_id]),
            kwargs="{}",
            retries=task.request.retries,
        )
        task.send_event("task-started", job_id=job_id)
    try:
        with job_errors(task, job_id):
            runner.start_job(job_id, operation, enqueue)
    finally:
        _discard_upload(job_id)
        taskevents.send_job_state(job_id, task.request.hostname, task.app)


def _discard_upload(job_id: int) -> None:
    """A finished job's uploaded file is removed (best effort: see README, vacuumlo)."""
    with contextlib.suppress(Exception):
        uploads.discard_if_finished(job_id)


def chunk(task: Task, job_id: int, chunk_no: int, operation: runner.Operation) -> dict[str, Any]:
    """A chunk task: run the chunk once, then tell Flower how far the job is."""
    try:
        return _chunk(task, job_id, chunk_no, operation)
    finally:
        _discard_upload(job_id)


def _chunk(task: Task, job_id: int, chunk_no: int, operation: runner.Operation) -> dict[str, Any]:
    try:
        with job_errors(task, job_id):
            # Flower shows the chunk as PROGRESS while it works (a custom event type
            # becomes the task's state there), then SUCCESS.
            with contextlib.suppress(Exception):
                task.send_event("task-progress", job_id=job_id, chunk=chunk_no, phase="started")
            outcome = runner.run_chunk(
                job_id,
                chunk_no,
                operation,
                worker=task.request.hostname,
                # the last chunk of a phase sends the next phase's chunks
                enqueue=lambda jid, n: send_chunk(task, jid, n),
            )
            return {"job_id": job_id, "chunk": chunk_no, "ran": outcome.ran, "state": outcome.state}
        return {"job_id": job_id, "chunk": chunk_no, "ran": False, "state": JobState.FAILED.value}
    finally:
        # The job's own task in Flower: its progress, or its end if this chunk ended it.
        taskevents.send_job_state(job_id, task.request.hostname, task.app)


# --- the submit task: any Celery client can start a job ------------------------------
# (Imported late: worker.client imports the job operations, which tasks import from here.)

from worker.app import app  # noqa: E402
from worker.client import submit_json_or_fail  # noqa: E402
from worker.queues import MAINTENANCE  # noqa: E402


@app.task(
    name="tasks.jobs.submit",
    queue=MAINTENANCE,
    autoretry_for=(RetryableError,),  # database or broker away: the key makes a retry safe
    retry_backoff=BACKOFF_BASE_S,
    retry_backoff_max=BACKOFF_MAX_S,
    max_retries=MAX_RETRIES,
)
def submit(kind: str, params: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    """Write the job row and send its job message, as ``worker.client`` does.

    For producers that cannot import ``worker.client`` (another language, a
    plain ``celery call``). A refused request becomes a failed job row whose
    error says why; the same key gives the same job. Returns the job's id and state.
    """
    job_id = submit_json_or_fail(kind, params, key)
    state = ledger.get_summary(job_id).state
    logger.info("submitted %s job %s (%s)", kind, job_id, state, extra={"job_id": job_id})
    return {"job_id": job_id, "state": state}


@app.task(name="tasks.jobs.run_schedule", queue=MAINTENANCE)
def run_schedule(name: str, at: float | None = None) -> dict[str, Any]:
    """One slot of a BULKOPS_SCHEDULE entry: submit with the key ``schedule:NAME:SLOT``.

    The slot is taken when the task runs (``at``: a time for tests); every
    beat sending it within one slot gets the slot's one job.
    """
    from worker import schedules
    from worker.config import get_settings

    path = get_settings().bulkops_schedule
    entry = schedules.load(path).get(name) if path is not None else None
    if entry is None:
        raise RuntimeError(f"no schedule {name!r} in BULKOPS_SCHEDULE ({path})")
    slot = entry.slot(at)
    job_id = submit_json_or_fail(entry.kind, entry.params_for(slot), entry.key(slot))
    state = ledger.get_summary(job_id).state
    return {"job_id": job_id, "state": state, "schedule": name, "slot": slot}


@app.task(name="tasks.jobs.watch_drop_folder", queue=MAINTENANCE)
def watch_drop_folder() -> dict[str, Any]:
    """Import each settled new file of BULKOPS_DROP_FOLDER once (beat, every settle period)."""
    from worker import schedules
    from worker.config import get_settings

    s = get_settings()
    if s.bulkops_drop_folder is None:
        return {"jobs": []}
    folder = s.bulkops_drop_folder
    folder = folder if folder.is_absolute() else s.import_root / folder
    found = schedules.scan_drop_folder(folder, s.bulkops_drop_settle_s, submit_json_or_fail)
    return {"jobs": found}
