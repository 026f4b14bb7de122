"""The Python producer API: submit jobs, wait for them, read summaries and rejects.

Submitting writes the job row and commits before the Celery message (which
carries only the job id) is sent; see :func:`worker.ledger.submit`.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kombu.exceptions import KombuError

from worker import bulkload, ledger
from worker.db import session_scope
from worker.errors import BrokerUnavailable, PermanentError, UsageError
from worker.importer import ImportParams, confine, guess_format
from worker.ledger import JobSummary, RejectedRow
from worker.models import JobKind
from worker.queues import IMPORTS, UPDATES
from worker.seeding import SeedParams
from worker.updates import UpdateParams

# Job kind -> (the job task that plans it, its queue).
JOB_TASKS: dict[str, tuple[str, str]] = {
    JobKind.SEED: ("tasks.seeding.run_seed", IMPORTS),
    JobKind.IMPORT: ("tasks.imports.run_import", IMPORTS),
    JobKind.UPDATE_STATUS: ("tasks.updates.run_update", UPDATES),
}


def send_job(kind: str, job_id: int, task_id: str) -> None:
    """Send the job's message: its id only, JSON. Raises BrokerUnavailable."""
    from worker.app import app

    name, queue = JOB_TASKS[kind]
    try:
        # Producers read the ledger, never Celery results: no result-store subscription.
        app.send_task(name, args=[job_id], task_id=task_id, queue=queue, ignore_result=True)
    except (KombuError, OSError, RuntimeError) as exc:
        raise BrokerUnavailable(f"cannot send job {job_id} to Redis: {exc}") from exc


def _submit(kind: str, params: dict[str, object], key: str | None) -> int:
    return ledger.submit(kind, params, lambda job_id, task_id: send_job(kind, job_id, task_id), key)


def submit_seed(
    users: int = 10, todos_per_user: int = 5, random_seed: int = 42, key: str | None = None
) -> int:
    """Queue a seeding job; returns its id."""
    params = SeedParams(users=users, todos_per_user=todos_per_user, random_seed=random_seed)
    return _submit(JobKind.SEED, params.to_params(), key)


def submit_import(
    path: str | Path,
    table: str = "todos",
    format: str | None = None,
    mode: str = "insert",
    dry_run: bool = False,
    key: str | None = None,
    max_errors: int | None = None,
    max_error_rate: float | None = None,
) -> int:
    """Queue an import of ``path`` (under BULKOPS_IMPORT_ROOT); returns the job id.

    A path outside the import root is refused here, before any job exists.
    """
    _, relative = confine(path)
    params = ImportParams(
        path=relative,
        table=table,
        format=format or guess_format(path),
        mode=mode,
        dry_run=dry_run,
        max_errors=max_errors,
        max_error_rate=max_error_rate,
    )
    return _submit(JobKind.IMPORT, params.to_params(), key)


def submit_update_status(
    to_status: str,
    from_statuses: Sequence[str] = (),
    owner_email: str | None = None,
    ids_file: str | Path | None = None,
    created_before: str | None = None,
    dry_run: bool = False,
    key: str | None = None,
) -> int:
    """Queue a bulk status update; returns the job id.

    Unknown statuses, a malformed timestamp, an unknown owner or an ids file
    outside the import root are refused here, before any job exists.
    """
    relative = confine(ids_file)[1] if ids_file is not None else None
    params = UpdateParams(
        to_status=to_status,
        from_statuses=tuple(dict.fromkeys(from_statuses)),
        owner_email=owner_email.strip().lower() if owner_email else None,
        ids_file=relative,
        created_before=created_before,
        dry_run=dry_run,
    )
    if params.owner_email is not None:
        with session_scope() as session:
            if not bulkload.owner_ids(session, [params.owner_email]):
                raise UsageError(f"--owner {owner_email!r}: no user with that email")
    return _submit(JobKind.UPDATE_STATUS, params.to_params(), key)


# Job kind -> its submit function (keyword arguments = the JSON params).
SUBMITTERS: dict[str, Callable[..., int]] = {
    JobKind.SEED: submit_seed,
    JobKind.IMPORT: submit_import,
    JobKind.UPDATE_STATUS: submit_update_status,
}


# --- any kind, from JSON (the submit task) -------------------------------------------


def submit_json(kind: str, params: dict[str, Any], key: str | None = None) -> int:
    """Submit a job described in JSON, as :func:`submit_seed` & co. would.

    ``params`` are the keyword arguments of the kind's submit function. Bad
    parameters raise UsageError (or the check's own PermanentError) before
    any job exists.
    """
    submit = SUBMITTERS.get(kind)
    if submit is None:
        raise UsageError(f"unknown job kind {kind!r}: use one of {', '.join(SUBMITTERS)}")
    if not isinstance(params, dict):
        raise UsageError(f"params must be a JSON object, not {type(params).__name__}")
    accepted = [n for n in inspect.signature(submit).parameters if n != "key"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise UsageError(
            f"{kind}: unknown parameter(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}"
        )
    try:
        return submit(**params, key=key)
    except TypeError as exc:  # a required parameter missing
        raise UsageError(f"{kind}: {exc}") from None


def submit_json_or_fail(kind: str, params: Any, key: str | None = None) -> int:
    """:func:`submit_json`, but a refused request becomes a failed job row.

    A producer that only sends a Celery message sees no exception; the ledger
    row (``bulkops job ID``) says what was wrong. The key is kept on the
    failed row, so sending the same bad request again gives the same job.
    """
    try:
        return submit_json(kind, params, key)
    except PermanentError as exc:  # a retryable error (database, broker) propagates
        refused = exc
    created: list[int] = []
    row_kind = kind if isinstance(kind, str) and kind else "unknown"
    row_params = params if isinstance(params, dict) else {"params": params}
    job_id = ledger.submit(
        row_kind[:20], row_params, lambda jid, _task_id: created.append(jid), key
    )
    if created:  # a new row, not the earlier job of the same key
        ledger.fail(job_id, refused)
    return job_id


def summary(job_id: int) -> JobSummary:
    return ledger.get_summary(job_id)


def wait(
    job_id: int,
    timeout: float | None = None,
    poll_s: float = 0.5,
    on_progress: Callable[[JobSummary], None] | None = None,
) -> JobSummary:
    """Poll the ledger until the job finishes; raises TimeoutError after ``timeout``."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        current = ledger.get_summary(job_id)
        if on_progress is not None:
            on_progress(current)
        if current.finished:
            return current
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {current.state} after {timeout} s")
        time.sleep(poll_s)


def rejects(job_id: int, limit: int | None = None) -> list[RejectedRow]:
    return ledger.get_rejects(job_id, limit)


def cancel(job_id: int) -> str:
    return ledger.cancel(job_id)


def jobs(limit: int = 20, state: str | None = None) -> list[JobSummary]:
    if limit < 1:
        raise UsageError("limit must be at least 1")
    return ledger.list_jobs(limit, state)
