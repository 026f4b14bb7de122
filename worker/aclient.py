"""The async producer API: :mod:`worker.client` for asyncio applications (FastAPI and co.).

Same operations, same contract (the job row commits before its message is
sent; the same key twice gives one job), and never a blocking call on the
event loop:

* the database is reached through SQLAlchemy's async engine (asyncpg);
* the SQL and the checks are the sync ones, not copies: the ledger's
  session-taking functions (``ledger.insert_job``, ``read_summary``, …) run
  through ``AsyncSession.run_sync`` / ``AsyncConnection.run_sync``, the
  SQLAlchemy-documented way to call sync ORM code on an async session (it
  runs in a greenlet, every driver call is awaited on the loop);
* sending the Celery message (kombu is blocking) and checking a path under
  the import root (file-system calls) run in a worker thread
  (``asyncio.to_thread``).

Install with ``pip install 'bulkops[async]'``. Engines are per event loop
(an asyncpg connection belongs to the loop that opened it) and follow
``DATABASE_URL``; call :func:`dispose_engine` on shutdown (a FastAPI lifespan).
Uploads stream from any object with ``async read(n)`` (Starlette's
``UploadFile``) into the same upload store as ``worker.client``
(PostgreSQL large objects, or ``BULKOPS_UPLOAD_STORE``).
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from worker import chunks, client, ledger, seeding, targets, updates, upload_postgres, uploads
from worker.config import get_settings
from worker.db import translated
from worker.errors import ImportPathError, UsageError
from worker.ledger import JobSummary, RejectedRow
from worker.models import JobKind
from worker.source import confine

T = TypeVar("T")


class AsyncReadable(Protocol):
    """What an upload streams from: Starlette's ``UploadFile``, or any async reader."""

    async def read(self, size: int = -1) -> bytes: ...


# --- the engine and sessions ------------------------------------------------------------

_engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[str, AsyncEngine]] = (
    weakref.WeakKeyDictionary()
)


def async_url(url: str) -> str:
    """``DATABASE_URL`` with the asyncpg driver."""
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def get_engine() -> AsyncEngine:
    """This event loop's engine, with the pool settings of the environment."""
    loop = asyncio.get_running_loop()
    s = get_settings()
    url = async_url(s.sqlalchemy_url)
    cached = _engines.get(loop)
    if cached is not None and cached[0] == url:
        return cached[1]
    engine = create_async_engine(
        url,
        pool_size=s.db_pool_size,
        max_overflow=s.db_max_overflow,
        pool_timeout=s.db_pool_timeout,
        pool_recycle=s.db_pool_recycle,
        pool_pre_ping=s.db_pool_pre_ping,
        connect_args={"server_settings": {"application_name": "bulkops"}, "timeout": 10},
    )
    _engines[loop] = (url, engine)
    if cached is not None:  # DATABASE_URL changed: the old pool closes in the background
        loop.create_task(cached[1].dispose())
    return engine


async def dispose_engine() -> None:
    """Close this loop's pooled connections (on application shutdown)."""
    cached = _engines.pop(asyncio.get_running_loop(), None)
    if cached is not None:
        await cached[1].dispose()


@asynccontextmanager
async def session_scope() -> AsyncIterator[AsyncSession]:
    """An async session: commit on success, roll back on error; driver errors translated."""
    async with AsyncSession(get_engine(), expire_on_commit=False) as session:
        with translated():
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise


async def get_session() -> AsyncIterator[AsyncSession]:
    """The seed document's dependency: ``session: AsyncSession = Depends(get_session)``."""
    async with session_scope() as session:
        yield session


async def _run(fn: Callable[..., T], *args: Any, session: AsyncSession | None = None) -> T:
    """``fn(sync_session, *args)`` on the given session, else in a transaction of its own."""
    if session is not None:
        with translated():
            return await session.run_sync(fn, *args)
    async with session_scope() as own:
        return await own.run_sync(fn, *args)


# --- submit -------------------------------------------------------------------------------


@asynccontextmanager
async def _key_locked(key: str | None) -> AsyncIterator[None]:
    """The key's submit lock, as ``ledger.submit`` takes it, held on a connection of its own."""
    if key is None:
        yield
        return
    with translated():
        conn = await get_engine().connect()
    try:
        with translated():
            await conn.run_sync(ledger.lock_key, key)
        yield
    finally:
        try:
            await conn.run_sync(ledger.unlock_key, key)
        except BaseException:
            await conn.invalidate()  # never leave the key locked on a pooled connection
        await conn.close()


async def _submit(kind: str, params: dict[str, Any], key: str | None) -> int:
    """:func:`worker.ledger.submit`'s steps: row committed, then the message, else no row."""
    async with _key_locked(key):
        task_id = ledger.new_task_id()
        job_id, created = await _run(ledger.insert_job, kind, params, key, task_id)
        if not created:
            return job_id
        sending = asyncio.ensure_future(asyncio.to_thread(client.send_job, kind, job_id, task_id))
        try:
            # Shielded: if the caller is cancelled, the send still completes in its
            # thread and the row stays (a lost message is re-sent by recovery).
            await asyncio.shield(sending)
        except asyncio.CancelledError:
            raise
        except BaseException:
            await _run(ledger.remove_unsent, job_id)
            raise
    return job_id


async def submit_seed(
    users: int | None = None,
    todos_per_user: int | None = None,
    random_seed: int = seeding.DEFAULT_RANDOM_SEED,
    key: str | None = None,
    table: str | None = None,
    rows: int | None = None,
    parent_rows: dict[str, int] | None = None,
) -> int:
    """Queue a seeding job; returns its id. As :func:`worker.client.submit_seed`."""
    params = seeding.seed_params(users, todos_per_user, random_seed, table, rows, parent_rows)
    return await _submit(JobKind.SEED, params.to_params(), key)


async def submit_import(
    path: str | Path | AsyncReadable,
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
    """Queue an import; returns the job id. As :func:`worker.client.submit_import`.

    ``path`` is a file under BULKOPS_IMPORT_ROOT, or (``upload=True``) a local
    file, or an async reader (an ``UploadFile``) streamed into the upload store
    first, in ``uploads.WRITE_BYTES`` writes; ``name`` names a stream.
    """
    options = (table, format, mode, dry_run, max_errors, max_error_rate)
    if not upload and isinstance(path, str | Path):
        _, relative = await asyncio.to_thread(confine, path)
        params = client.import_params(relative, *options, name=str(path))
        return await _submit(JobKind.IMPORT, params, key)
    if isinstance(path, str | Path):
        local = Path(path).expanduser()
        name = name or local.name
        params = client.import_params(f"upload:{name}", *options, name=name)
        try:
            f = await asyncio.to_thread(local.open, "rb")
        except OSError as exc:
            raise ImportPathError(f"{path}: cannot be read: {exc}") from None
        try:
            ref = await store(_ThreadReader(f), name, on_progress)
        finally:
            await asyncio.to_thread(f.close)
    else:
        name = name or Path(str(getattr(path, "filename", "") or "upload")).name
        params = client.import_params(f"upload:{name}", *options, name=name)
        ref = await store(path, name, on_progress)
    try:
        job_id = await _submit(JobKind.IMPORT, {**params, "upload": ref.to_params()}, key)
    except BaseException:
        await discard(ref)
        raise
    if (await summary(job_id)).params.get("upload") != ref.to_params():
        await discard(ref)  # the key's earlier job: it has its own data
    return job_id


class _ThreadReader:
    """A blocking binary file read in a worker thread."""

    def __init__(self, f: Any) -> None:
        self._f = f

    async def read(self, size: int = -1) -> bytes:
        return bytes(await asyncio.to_thread(self._f.read, size))


async def store(
    stream: AsyncReadable, name: str, on_progress: Callable[[int], None] | None = None
) -> uploads.UploadRef:
    """Stream into the configured upload store, as ``uploads.store`` does.

    PostgreSQL: a new large object written on the async engine, one commit at
    the end. An fsspec store: its blocking writer runs in a worker thread,
    reading each block from ``stream`` back on this loop.
    """
    target = uploads.configured_store()
    if not isinstance(target, upload_postgres.PostgresStore):
        loop = asyncio.get_running_loop()
        reader = _LoopReader(stream, loop)
        return await asyncio.to_thread(target.write, reader, name, on_progress)
    digest, size = hashlib.sha256(), 0
    with translated():
        async with get_engine().begin() as conn:
            oid = await conn.run_sync(upload_postgres.create_object)
            while block := await stream.read(uploads.WRITE_BYTES):
                await conn.run_sync(upload_postgres.put_block, oid, size, block)
                digest.update(block)
                size += len(block)
                if on_progress is not None:
                    on_progress(len(block))
    return uploads.UploadRef(oid=oid, name=name, size=size, sha256=digest.hexdigest())


class _LoopReader:
    """An async reader read from a worker thread: each read runs on the reader's loop."""

    def __init__(self, stream: AsyncReadable, loop: asyncio.AbstractEventLoop) -> None:
        self._stream, self._loop = stream, loop

    def read(self, size: int = -1, /) -> bytes:
        return asyncio.run_coroutine_threadsafe(self._stream.read(size), self._loop).result()


async def discard(ref: uploads.UploadRef) -> bool:
    """Remove an upload's data; False if it was already gone."""
    if ref.oid is None:
        return await asyncio.to_thread(uploads.discard, ref)
    return await _run(upload_postgres.unlink, ref.oid)


async def submit_update_status(
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
    """Queue a bulk status update; returns the job id. As worker.client.submit_update_status."""
    params = await asyncio.to_thread(
        updates.update_params,
        to_status, from_statuses, owner_email, ids_file, created_before, dry_run, table, where,
        updated_before,
    )
    await _run(updates.check_filters, params)
    return await _submit(JobKind.UPDATE_STATUS, params.to_params(), key)


# --- reading, waiting, cancelling ----------------------------------------------------------


async def summary(job_id: int, session: AsyncSession | None = None) -> JobSummary:
    """The job's summary (one query)."""
    return await _run(ledger.read_summary, job_id, session=session)


async def rejects(
    job_id: int, limit: int | None = None, session: AsyncSession | None = None
) -> list[RejectedRow]:
    """The job's rejected rows in line order (two queries, whatever their number)."""
    return await _run(ledger.read_rejects, job_id, limit, session=session)


async def summary_and_rejects(
    job_id: int, limit: int | None = None, session: AsyncSession | None = None
) -> tuple[JobSummary, list[RejectedRow]]:
    """The summary and the rejected rows together: two queries (e.g. for an export)."""
    return await _run(ledger.read_job_and_rejects, job_id, limit, session=session)


async def jobs(
    limit: int = 20, state: str | None = None, session: AsyncSession | None = None
) -> list[JobSummary]:
    if limit < 1:
        raise UsageError("limit must be at least 1")
    return await _run(ledger.read_jobs, limit, state, session=session)


async def wait(
    job_id: int,
    timeout: float | None = None,
    poll_s: float = 0.5,
    on_progress: Callable[[JobSummary], None] | None = None,
) -> JobSummary:
    """Poll the ledger until the job finishes (``asyncio.sleep`` between reads).

    Raises TimeoutError after ``timeout``; cancelling the awaiting task stops
    waiting, not the job (that is :func:`cancel`).
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        current = await summary(job_id)
        if on_progress is not None:
            on_progress(current)
        if current.finished:
            return current
        if deadline is not None and loop.time() > deadline:
            raise TimeoutError(f"job {job_id} still {current.state} after {timeout} s")
        await asyncio.sleep(poll_s)


async def cancel(job_id: int) -> str:
    """As :func:`worker.ledger.cancel`: request, commit, then settle if nothing is in flight."""
    state = await _run(ledger.request_cancel, job_id)
    return await _run(chunks.settle_cancel_in, job_id) or state
