"""bulkops behind a FastAPI router, with the async producer API (``worker.aclient``).

    pip install 'bulkops[fastapi]' uvicorn
    DATABASE_URL=... REDIS_URL=... uvicorn examples.fastapi_app:app

Routes (a worker must be running for jobs to move: ``celery -A worker worker``):

* ``POST /imports/upload`` — multipart ``file`` (+ form ``table``, ``mode``,
  ``key``): the file is streamed into PostgreSQL (a large object) and an
  import is queued; 202 ``{"id", "state"}``.
* ``POST /imports`` — JSON ``{"path": "todos.csv", ...}``: a file under
  ``BULKOPS_IMPORT_ROOT``; 202 ``{"id", "state"}``.
* ``GET /imports/{id}`` — the job's summary (the CLI's ``--json``).
* ``GET /imports/{id}/rejects`` — its rejected rows in the job's input format
  (CSV with ``_line``, ``_error``; JSON Lines for a JSON Lines job), ready to
  fix and post again.

Reads use the seed document's ``Depends(get_session)`` pattern (an async
session per request); submits manage their own transactions, because the job
row must commit before its message is sent. Nothing here blocks the loop.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlmodel.ext.asyncio.session import AsyncSession

from worker import aclient
from worker.errors import BulkopsError, JobNotFound, PermanentError, RetryableError
from worker.rejects_export import export_format, write_export

router = APIRouter(prefix="/imports", tags=["imports"])

# The seed document's dependency: one async session per request.
Session = Annotated[AsyncSession, Depends(aclient.get_session)]


class PathImport(BaseModel):
    path: str
    table: str = "todos"
    format: str | None = None
    mode: str = "insert"
    dry_run: bool = False
    key: str | None = None


async def _queued(job_id: int) -> dict[str, Any]:
    return {"id": job_id, "state": (await aclient.summary(job_id)).state}


@router.post("/upload", status_code=202)
async def import_upload(
    file: Annotated[UploadFile, File()],
    table: Annotated[str, Form()] = "todos",
    mode: Annotated[str, Form()] = "insert",
    key: Annotated[str | None, Form()] = None,
) -> dict[str, Any]:
    """Stream the posted file into the upload store and queue its import."""
    job_id = await aclient.submit_import(file, table=table, mode=mode, key=key, name=file.filename)
    return await _queued(job_id)


@router.post("", status_code=202)
async def import_path(body: PathImport) -> dict[str, Any]:
    """Queue the import of a file under BULKOPS_IMPORT_ROOT."""
    job_id = await aclient.submit_import(
        body.path,
        table=body.table,
        format=body.format,
        mode=body.mode,
        dry_run=body.dry_run,
        key=body.key,
    )
    return await _queued(job_id)


@router.get("/{job_id}")
async def job_summary(job_id: int, session: Session) -> dict[str, Any]:
    return (await aclient.summary(job_id, session=session)).to_dict()


@router.get("/{job_id}/rejects")
async def job_rejects(job_id: int, session: Session) -> Response:
    """The rejects as a file to fix and import again (two queries, whatever their number)."""
    summary, rows = await aclient.summary_and_rejects(job_id, session=session)
    out = io.StringIO(newline="")
    write_export(summary, rows, out)
    fmt = export_format(summary)
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson",
        headers={"Content-Disposition": f'attachment; filename="job-{job_id}-rejects.{fmt}"'},
    )


def _error(status: int) -> Any:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        message = exc.message if isinstance(exc, BulkopsError) else str(exc)
        return JSONResponse({"error": message}, status_code=status)

    return handler


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await aclient.dispose_engine()


def create_app() -> FastAPI:
    app = FastAPI(title="bulkops imports", lifespan=lifespan)
    app.include_router(router)
    app.add_exception_handler(JobNotFound, _error(404))
    app.add_exception_handler(PermanentError, _error(422))  # refused: bad path, mode, table…
    app.add_exception_handler(RetryableError, _error(503))  # database or Redis away: retry
    return app


app = create_app()
