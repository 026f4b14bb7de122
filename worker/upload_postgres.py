"""The default upload store: PostgreSQL large objects, so uploads need nothing but the database.

A producer streams its file into a large object in ``WRITE_BYTES`` writes;
the server keeps it as 2 KiB pages of ``pg_largeobject``, never one huge
value, and the producer holds one write buffer at a time.

Why large objects rather than a chunk table: they need no schema (no
migration, no model), and ``lo_lseek64``/``loread`` read exactly the byte
range a chunk asks for on the server, which is what the import's plan and
chunks do with a file. Their cost: a descriptor lives only inside a
transaction, so an open upload holds one pooled connection (with an open
read-only transaction) until it is closed; and nothing removes a large
object by itself, hence ``remove``, called when the job ends.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from sqlalchemy import Connection, text
from sqlmodel import Session

from worker.db import get_engine, open_large_object, session_scope, translated
from worker.errors import ImportPathError, UndefinedObject
from worker.upload_store import (
    POSTGRES,
    READ_BUFFER_BYTES,
    Blocks,
    Readable,
    SeekableRaw,
    UploadRef,
)


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


class PostgresStore:
    """Uploads as large objects of the bulkops database."""

    def write(
        self, stream: Readable, name: str, on_progress: Callable[[int], None] | None = None
    ) -> UploadRef:
        """One new large object, committed once at the end (a failure leaves none)."""
        blocks = Blocks(stream, on_progress)
        with translated(), _raw_connection() as conn:
            lobj = conn.lobject(0, "wb")
            for block in blocks:
                lobj.write(block)
            oid = int(lobj.oid)
            lobj.close()
            conn.commit()
        return blocks.ref(name, store=POSTGRES, oid=oid)

    def open(self, ref: UploadRef) -> IO[bytes]:
        return io.BufferedReader(_LargeObjectRaw(ref), buffer_size=READ_BUFFER_BYTES)

    def remove(self, ref: UploadRef) -> bool:
        with session_scope() as session:
            return unlink(session, _oid(ref))

    def exists(self, ref: UploadRef) -> bool:
        with session_scope() as session:
            return bool(
                session.execute(
                    text("SELECT 1 FROM pg_largeobject_metadata WHERE oid = CAST(:oid AS oid)"),
                    {"oid": _oid(ref)},
                ).first()
            )


def _oid(ref: UploadRef) -> int:
    assert ref.oid is not None, ref
    return ref.oid


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


def unlink(conn: Connection | Session, oid: int) -> bool:
    """Remove a large object inside the caller's transaction; False if it was already gone."""
    removed = conn.execute(
        text("SELECT lo_unlink(oid) FROM pg_largeobject_metadata WHERE oid = CAST(:oid AS oid)"),
        {"oid": oid},
    ).first()
    return removed is not None


class _LargeObjectRaw(SeekableRaw):
    """A raw, seekable binary stream over one large object (psycopg2 ``lobject``).

    Holds a pooled connection, in a read-only transaction, until closed.
    """

    def __init__(self, ref: UploadRef) -> None:
        super().__init__()
        self._proxy = get_engine().raw_connection()
        try:
            try:
                self._lobj = open_large_object(self._proxy.dbapi_connection, _oid(ref))
            except UndefinedObject:
                raise ImportPathError(f"{ref} is no longer stored") from None
        except BaseException:
            self._release()
            raise

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
