"""The Python producer API: submit jobs, wait for them, read summaries and rejects.

Submitting writes the job row and commits before the Celery message (which
carries only the job id) is sent; see :func:`worker.ledger.submit`.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from celery import Celery
from kombu.exceptions import KombuError

from worker import ledger, seeding, targets, updates, uploads
from worker.db import session_scope
from worker.errors import BrokerUnavailable, ImportPathError, PermanentError, UsageError
from worker.importer import ImportParams, guess_format
from worker.ledger import JobSummary, RejectedRow
from worker.models import JobKind
from worker.queues import IMPORTS, UPDATES
from worker.source import confine

# Job kind -> (the job task that plans it, its queue).
JOB_TASKS: dict[str, tuple[str, str]] = {
    JobKind.SEED: ("tasks.seeding.run_seed", IMPORTS),
    JobKind.IMPORT: ("tasks.imports.run_import", IMPORTS),
    JobKind.UPDATE_STATUS: ("tasks.updates.run_update", UPDATES),
}


def send_job(kind: str, job_id: int, task_id: str, app: Celery | None = None) -> None:
    """Send the job's message: its id only, JSON. Raises BrokerUnavailable.

    ``app``: the Celery app to send with (default: ``worker.app.producer_app()``).
    """
    from worker.app import producer_app

    app = app or producer_app()
    name, queue = JOB_TASKS[kind]
    try:
        # Producers read the ledger, never Celery results: no result-store subscription.
        app.send_task(name, args=[job_id], task_id=task_id, queue=queue, ignore_result=True)
    except (KombuError, OSError, RuntimeError) as exc:
        raise BrokerUnavailable(f"cannot send job {job_id} to Redis: {exc}") from exc


def _submit(kind: str, params: dict[str, object], key: str | None) -> int:
    return ledger.submit(kind, params, lambda job_id, task_id: send_job(kind, job_id, task_id), key)


def submit_seed(
    users: int | None = None,
    todos_per_user: int | None = None,
    random_seed: int = seeding.DEFAULT_RANDOM_SEED,
    key: str | None = None,
    table: str | None = None,
    rows: int | None = None,
    parent_rows: dict[str, int] | None = None,
) -> int:
    """Queue a seeding job; returns its id.

    ``table``/``rows`` seed any target (its parents first, ``parent_rows`` per
    parent); without ``table``, ``users``/``todos_per_user`` seed the example.
    """
    params = seeding.seed_params(users, todos_per_user, random_seed, table, rows, parent_rows)
    return _submit(JobKind.SEED, params.to_params(), key)


def import_params(
    path: str,
    table: str,
    format: str | None,
    mode: str,
    dry_run: bool,
    max_errors: int | None,
    max_error_rate: float | None,
    name: str | None = None,
) -> dict[str, Any]:
    """An import's validated params (shared with worker.aclient); UsageError if refused.

    ``path`` is the confined path relative to the root, or ``upload:NAME``;
    the format is guessed from ``name`` (else ``path``) when not given.
    """
    return ImportParams(
        path=path,
        table=table,
        format=format or guess_format(name or path),
        mode=mode,
        dry_run=dry_run,
        max_errors=max_errors,
        max_error_rate=max_error_rate,
    ).to_params()


def submit_import(
    path: str | Path | BinaryIO,
    table: str = targets.EXAMPLE_TABLE,
    format: str | None = None,
    mode: str = "insert",
    dry_run: bool = False,
    key: str | None = None,
    max_errors: int | None = None,
    max_error_rate: float | None = None,
    upload: bool = False,
    name: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Queue an import; returns the job id.

    By default ``path`` is a file under BULKOPS_IMPORT_ROOT, which every worker
    must see; a path outside it is refused here, before any job exists. With
    ``upload=True``, or when ``path`` is a binary stream, the data is streamed
    into the upload store first (:mod:`worker.uploads`: PostgreSQL, or
    BULKOPS_UPLOAD_STORE) and any worker reads it from there: no shared
    folder. ``name`` names a stream (messages, format guess);
    ``on_progress(n)`` is told the bytes of each write.
    """
    if upload or not isinstance(path, str | Path):
        return _submit_upload(
            path, table, format, mode, dry_run, key, max_errors, max_error_rate, name, on_progress
        )
    _, relative = confine(path)
    params = import_params(
        relative, table, format, mode, dry_run, max_errors, max_error_rate, str(path)
    )
    return _submit(JobKind.IMPORT, params, key)


def _submit_upload(
    source: str | Path | BinaryIO,
    table: str,
    format: str | None,
    mode: str,
    dry_run: bool,
    key: str | None,
    max_errors: int | None,
    max_error_rate: float | None,
    name: str | None,
    on_progress: Callable[[int], None] | None,
) -> int:
    """Validate, store the data, then submit; the stored data is removed if no job uses it."""
    if isinstance(source, str | Path):
        local = Path(source).expanduser()
        if not local.is_file():
            raise ImportPathError(f"{source}: no such file")
        name = name or local.name
    else:
        name = name or Path(str(getattr(source, "name", "") or "stdin")).name
    params = import_params(
        f"upload:{name}", table, format, mode, dry_run, max_errors, max_error_rate, name
    )
    if isinstance(source, str | Path):
        try:
            with Path(source).expanduser().open("rb") as f:
                ref = uploads.store(f, name, on_progress)
        except OSError as exc:
            raise ImportPathError(f"{source}: cannot be read: {exc}") from None
    else:
        ref = uploads.store(source, name, on_progress)
    try:
        job_id = _submit(JobKind.IMPORT, {**params, "upload": ref.to_params()}, key)
    except BaseException:
        uploads.discard(ref)
        raise
    if ledger.get_summary(job_id).params.get("upload") != ref.to_params():
        uploads.discard(ref)  # the key's earlier job: it has its own data
    return job_id


def submit_update_status(
    to_status: str,
    from_statuses: Sequence[str] = (),
    owner_email: str | None = None,
    ids_file: str | Path | None = None,
    created_before: str | None = None,
    dry_run: bool = False,
    key: str | None = None,
    table: str | None = None,
    where: dict[str, str] | Sequence[tuple[str, str]] | None = None,
    updated_before: str | None = None,
) -> int:
    """Queue a bulk status update of any target that declares a status; returns the job id.

    ``where`` filters on the target's file columns (``{"category_slug": "home"}``);
    ``owner_email=EMAIL`` is short for ``where={"owner_email": EMAIL}``.
    ``created_before`` and ``updated_before`` take an ISO 8601 timestamp or a
    relative ``30d`` (:func:`worker.updates.resolve_relative`), and need the
    target's table to have that column. Unknown statuses or columns, a
    malformed timestamp, an unknown parent or an ids file outside the import
    root are refused here, before any job exists.
    """
    params = updates.update_params(
        to_status, from_statuses, owner_email, ids_file, created_before, dry_run, table, where,
        updated_before,
    )
    with session_scope() as session:
        updates.check_filters(session, params)
    return _submit(JobKind.UPDATE_STATUS, params.to_params(), key)


# Job kind -> its submit function (keyword arguments = the JSON params).
SUBMITTERS: dict[str, Callable[..., int]] = {
    JobKind.SEED: submit_seed,
    JobKind.IMPORT: submit_import,
    JobKind.UPDATE_STATUS: submit_update_status,
}


# --- any kind, from JSON (the submit task) -------------------------------------------


# Keyword arguments a JSON request cannot give: the key is its own argument, and
# an upload streams data from the producer's host, which a JSON request has not.
_NOT_JSON = {"key", "upload", "name", "on_progress"}


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
    accepted = [n for n in inspect.signature(submit).parameters if n not in _NOT_JSON]
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
    from worker import taskevents

    state = ledger.cancel(job_id)
    taskevents.send_job_state(job_id)  # Flower: CANCELLED now, or PROGRESS (cancelling)
    return state


def jobs(limit: int = 20, state: str | None = None) -> list[JobSummary]:
    if limit < 1:
        raise UsageError("limit must be at least 1")
    return ledger.list_jobs(limit, state)
