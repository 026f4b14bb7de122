"""Uploaded import files: stored in PostgreSQL, read by any worker like a local file.

A producer with no folder shared with the workers streams its file into a
PostgreSQL large object (:func:`store`), in ``WRITE_BYTES`` writes; the server
keeps it as 2 KiB pages of ``pg_largeobject``, never one huge value, and the
producer holds one write buffer at a time. The job's params carry the
reference (``{"upload": {...}}``) instead of a path under the import root.

Why large objects rather than a chunk table: they need no schema (no
migration, no model), and ``lo_lseek64``/``loread`` read exactly the byte
range a chunk asks for on the server, which is what the import's plan and
chunks do with a file. Their cost: a descriptor lives only inside a
transaction, so an open upload holds one pooled connection (with an open
read-only transaction) until it is closed; and nothing removes a large
object by itself, hence :func:`discard`, called when the job ends.

:func:`open_source` gives the import what it reads: something with ``.name``
and ``.open("rb")`` (a seekable buffered binary file), for an upload as for a
file under the import root.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, Protocol

from sqlalchemy import Connection, text
from sqlmodel import Session

from worker import ledger
from worker.config import get_settings
from worker.db import get_engine, open_large_object, session_scope, translated
from worker.errors import ImportPathError, UndefinedObject, UsageError
from worker.params import JobParams
from worker.source import FileIdentity, confine

WRITE_BYTES = 1024 * 1024  # bytes per write while storing (the producer's buffer)
READ_BUFFER_BYTES = 1024 * 1024  # the reader's buffer: one loread per MiB of sequential reads


class Source(Protocol):
    """What worker.parsing needs from a file: a name for messages, and a binary reader."""

    @property
    def name(self) -> str: ...

    def open(self, mode: str = "rb") -> IO[bytes]: ...


@dataclass(frozen=True)
class UploadRef(JobParams):
    """Where an upload is stored; JSON in the job's params under ``upload``."""

    oid: int  # the PostgreSQL large object
    name: str  # the producer's file name (messages, guessing the format)
    size: int
    sha256: str
    store: str = "postgres"

    def __post_init__(self) -> None:
        if self.store != "postgres":
            raise UsageError(f"upload: not a reference to a stored upload (store {self.store!r})")


# --- store ---------------------------------------------------------------------------


@contextmanager
def _raw_connection() -> Iterator[Any]:
    """A pooled connection's psycopg2 connection, in a transaction rolled back unless committed."""
    proxy = get_engine().raw_connection()
    try:
        yield proxy.dbapi_connection
    finally:
        try:
            proxy.rollback()
        finally:
            proxy.close()  # back to the pool


def store(
    stream: BinaryIO, name: str, on_progress: Callable[[int], None] | None = None
) -> UploadRef:
    """Copy ``stream`` to a new large object, ``WRITE_BYTES`` at a time; commit once at the end.

    ``on_progress(n)`` is called with the bytes of each write. Nothing is left
    stored if the stream or the database fails part way.
    """
    digest = hashlib.sha256()
    size = 0
    with translated(), _raw_connection() as conn:
        lobj = conn.lobject(0, "wb")
        while block := stream.read(WRITE_BYTES):
            lobj.write(block)
            digest.update(block)
            size += len(block)
            if on_progress is not None:
                on_progress(len(block))
        oid = int(lobj.oid)
        lobj.close()
        conn.commit()
    return UploadRef(oid=oid, name=name, size=size, sha256=digest.hexdigest())


# Writing through SQL, for drivers without psycopg2's ``lobject`` (worker.aclient on
# asyncpg): the same large object, the same WRITE_BYTES blocks, one commit by the caller.


def create_object(conn: Connection) -> int:
    """A new, empty large object in the caller's transaction; its oid."""
    return int(conn.execute(text("SELECT lo_create(0)")).scalar_one())


def put_block(conn: Connection, oid: int, offset: int, block: bytes) -> None:
    conn.execute(
        text("SELECT lo_put(CAST(:oid AS oid), :offset, :data)"),
        {"oid": oid, "offset": offset, "data": block},
    )


def discard(ref: UploadRef | dict[str, Any]) -> bool:
    """Remove an upload's data; False if it was already gone. Safe to call twice."""
    oid = ref.oid if isinstance(ref, UploadRef) else UploadRef.from_params(ref).oid
    with session_scope() as session:
        return unlink(session, oid)


def unlink(conn: Connection | Session, oid: int) -> bool:
    """Remove a large object inside the caller's transaction; False if it was already gone."""
    removed = conn.execute(
        text("SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = CAST(:oid AS oid)"),
        {"oid": oid},
    ).first()
    return removed is not None


def discard_for_job(params: dict[str, Any]) -> bool:
    """At the end of a job: remove its upload unless BULKOPS_KEEP_UPLOADS; True if removed."""
    upload = params.get("upload")
    if upload is None or get_settings().bulkops_keep_uploads:
        return False
    return discard(upload)


def exists(ref: UploadRef) -> bool:
    with session_scope() as session:
        return bool(
            session.execute(
                text("SELECT 1 FROM pg_largeobject_metadata WHERE oid = CAST(:oid AS oid)"),
                {"oid": ref.oid},
            ).first()
        )


# --- read ----------------------------------------------------------------------------


class _LargeObjectRaw(io.RawIOBase):
    """A raw, seekable binary stream over one large object (psycopg2 ``lobject``).

    Holds a pooled connection, in a read-only transaction, until closed.
    """

    def __init__(self, ref: UploadRef) -> None:
        super().__init__()
        self._ref = ref
        self._proxy = get_engine().raw_connection()
        try:
            try:
                self._lobj = open_large_object(self._proxy.dbapi_connection, ref.oid)
            except UndefinedObject:
                raise ImportPathError(
                    f"upload {ref.name} (large object {ref.oid}) is no longer stored"
                ) from None
        except BaseException:
            self._release()
            raise

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        with translated():
            data = self._lobj.read(len(view))
        view[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        with translated():
            return int(self._lobj.seek(offset, whence))

    def tell(self) -> int:
        with translated():
            return int(self._lobj.tell())

    def close(self) -> None:
        if not self.closed:
            try:
                self._lobj.close()
            except Exception:  # the connection may be gone; the rollback below ends it anyway
                pass
            self._release()
        super().close()

    def _release(self) -> None:
        try:
            self._proxy.rollback()
        finally:
            self._proxy.close()


class UploadedFile:
    """An upload as worker.parsing reads a Path: ``.name`` and ``.open("rb")``."""

    def __init__(self, ref: UploadRef) -> None:
        self.ref = ref

    @property
    def name(self) -> str:
        return self.ref.name

    def open(self, mode: str = "rb") -> IO[bytes]:
        if mode != "rb":
            raise UsageError(f"an upload opens only for binary reading ('rb'), not {mode!r}")
        return io.BufferedReader(_LargeObjectRaw(self.ref), buffer_size=READ_BUFFER_BYTES)

    def __repr__(self) -> str:
        return f"UploadedFile({self.ref.name!r}, oid={self.ref.oid}, {self.ref.size} bytes)"


def open_source(params: dict[str, Any], expect: dict[str, int] | None = None) -> Any:
    """The file an import job reads: its upload, or its path confined to the import root.

    ``expect`` is the identity the plan recorded (``FileIdentity.to_json``): a
    local file replaced or changed since raises FileChangedError.
    """
    if params.get("upload") is not None:
        return UploadedFile(UploadRef.from_params(params["upload"]))
    identity = None if expect is None else FileIdentity.from_json(expect)
    real, _ = confine(params["path"], expect=identity)
    return real  # .name and .open("rb"), each open checked against the identity


def discard_if_finished(job_id: int) -> bool:
    """The job-end hook: remove the job's upload once the job is finished; True if removed.

    Safe anywhere after the finishing transaction committed, any number of times.
    """
    upload = ledger.finished_upload(job_id)
    if upload is None:
        return False
    return discard_for_job({"upload": upload})
