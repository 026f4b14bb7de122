"""Uploaded import files: written to an upload store, read by any worker like a local file.

A producer with no folder shared with the workers streams its file into the
upload store (:func:`store`); the job's params carry the reference
(``{"upload": {...}}``) instead of a path under the import root. The store
is PostgreSQL large objects by default (:mod:`worker.upload_postgres`), or
any fsspec URL named by ``BULKOPS_UPLOAD_STORE`` (:mod:`worker.upload_fsspec`);
both implement :class:`worker.upload_store.UploadStore`, and this module is
the only one that picks between them: new uploads go to the configured store,
an existing reference is read from and removed in the store it names.

:func:`open_source` gives the import what it reads: something with ``.name``
and ``.open("rb")`` (a seekable buffered binary file), for an upload as for a
file under the import root.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any, Protocol

from worker import ledger
from worker.config import get_settings
from worker.errors import UsageError
from worker.source import FileIdentity, confine
from worker.upload_fsspec import FsspecStore
from worker.upload_postgres import PostgresStore
from worker.upload_store import (
    FSSPEC,
    POSTGRES,
    READ_BUFFER_BYTES,
    WRITE_BYTES,
    Readable,
    UploadRef,
    UploadStore,
)

__all__ = ["READ_BUFFER_BYTES", "WRITE_BYTES", "UploadRef", "UploadStore"]


class Source(Protocol):
    """What worker.parsing needs from a file: a name for messages, and a binary reader."""

    @property
    def name(self) -> str: ...

    def open(self, mode: str = "rb") -> IO[bytes]: ...


# --- which store -----------------------------------------------------------------------


def configured_store() -> UploadStore:
    """Where new uploads go: ``BULKOPS_UPLOAD_STORE`` (an fsspec URL), else PostgreSQL."""
    url = get_settings().bulkops_upload_store
    return PostgresStore() if url is None else FsspecStore(url)


def store_for(ref: UploadRef) -> UploadStore:
    """The store holding ``ref``, whatever the setting says today."""
    if ref.store == FSSPEC:
        return FsspecStore()
    assert ref.store == POSTGRES
    return PostgresStore()


# --- store, remove ------------------------------------------------------------------------


def store(
    stream: Readable, name: str, on_progress: Callable[[int], None] | None = None
) -> UploadRef:
    """Copy ``stream`` into the configured store, ``WRITE_BYTES`` at a time.

    ``on_progress(n)`` is called with the bytes of each write. Nothing is left
    stored if the stream or the store fails part way.
    """
    return configured_store().write(stream, name, on_progress)


def discard(ref: UploadRef | dict[str, Any]) -> bool:
    """Remove an upload's data; False if it was already gone. Safe to call twice."""
    ref = ref if isinstance(ref, UploadRef) else UploadRef.from_params(ref)
    return store_for(ref).remove(ref)


def discard_for_job(params: dict[str, Any]) -> bool:
    """At the end of a job: remove its upload unless BULKOPS_KEEP_UPLOADS; True if removed."""
    upload = params.get("upload")
    if upload is None or get_settings().bulkops_keep_uploads:
        return False
    return discard(upload)


def exists(ref: UploadRef) -> bool:
    return store_for(ref).exists(ref)


# --- read ----------------------------------------------------------------------------


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
        return store_for(self.ref).open(self.ref)

    def __repr__(self) -> str:
        return f"UploadedFile({self.ref}, {self.ref.size} bytes)"


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
