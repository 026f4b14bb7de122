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

from worker import ledger, runner
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
        chunk_task.apply_async(args=[job_id, chunk_no])
    except (KombuError, OSError, RuntimeError) as exc:
        raise BrokerUnavailable(f"cannot send chunk {chunk_no} of job {job_id}: {exc}") from exc


def start(task: Task, job_id: int, operation: runner.Operation, chunk_task: Task) -> None:
    """The job task: claim, plan, enqueue the chunk tasks.

    If Redis goes away while the chunks fan out, the job is queued again and the
    task retried; the retry (or recovery, if Redis also lost the retry) sends only
    the chunks not yet committed nor running.
    """

    def enqueue(jid: int, chunk_no: int) -> None:
        send_chunk(chunk_task, jid, chunk_no)

    with job_errors(task, job_id):
        runner.start_job(job_id, operation, enqueue)


def chunk(task: Task, job_id: int, chunk_no: int, operation: runner.Operation) -> dict[str, Any]:
    """A chunk task: run the chunk once, then tell Flower how far the job is."""
    with job_errors(task, job_id):
        # Flower shows the chunk as PROGRESS while it works (a custom event type
        # becomes the task's state there), then SUCCESS.
        with contextlib.suppress(Exception):
            task.send_event("task-progress", job_id=job_id, chunk=chunk_no, phase="started")
        outcome = runner.run_chunk(job_id, chunk_no, operation, worker=task.request.hostname)
        if outcome.ran:
            _progress(task, outcome)
        return {"job_id": job_id, "chunk": chunk_no, "ran": outcome.ran, "state": outcome.state}
    return {"job_id": job_id, "chunk": chunk_no, "ran": False, "state": JobState.FAILED.value}


def _progress(task: Task, outcome: runner.ChunkOutcome) -> None:
    """A task-progress event for this chunk task and for the job's own task.

    Flower shows an unknown event type as a state (``task-progress`` ->
    PROGRESS); it does not show ``update_state`` meta.
    """
    fields = {
        "job_id": outcome.job_id,
        "chunk": outcome.chunk_no,
        "done": outcome.chunks_done,
        "total": outcome.chunks_total,
    }
    with contextlib.suppress(Exception):  # progress is best effort, the ledger is the truth
        task.send_event("task-progress", **fields)
        job_task_id = ledger.celery_task_id(outcome.job_id)
        if job_task_id:
            with task.app.events.default_dispatcher(hostname=task.request.hostname) as d:
                d.send("task-progress", uuid=job_task_id, **fields)
