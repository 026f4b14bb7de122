"""What an upload store is: the reference a job carries, and the four things a store does.

Two stores implement :class:`UploadStore`: PostgreSQL large objects
(:mod:`worker.upload_postgres`, the default) and any fsspec URL
(:mod:`worker.upload_fsspec`: ``s3://``, ``gs://``, ``file://``). Which one
new uploads go to is ``BULKOPS_UPLOAD_STORE``; which one a job reads from is
its reference's ``store``, so jobs submitted before a change of setting still
read their data. :mod:`worker.uploads` picks the store; nothing else needs to
know which one it is.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol

from worker.errors import UsageError

WRITE_BYTES = 1024 * 1024  # bytes per write while storing (the producer's buffer)
READ_BUFFER_BYTES = 1024 * 1024  # the reader's buffer: one store read per MiB of sequential reads

POSTGRES, FSSPEC = "postgres", "fsspec"


@dataclass(frozen=True)
class UploadRef:
    """Where an upload is stored; JSON in the job's params under ``upload``.

    A PostgreSQL upload is its large object's ``oid``, an fsspec one its ``url``.
    """

    name: str  # the producer's file name (messages, guessing the format)
    size: int
    sha256: str
    store: str = POSTGRES
    oid: int | None = None
    url: str | None = None

    def to_params(self) -> dict[str, Any]:
        where = {"oid": self.oid} if self.store == POSTGRES else {"url": self.url}
        return {
            **where,
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "store": self.store,
        }

    @classmethod
    def from_params(cls, value: Any) -> UploadRef:
        store = value.get("store", POSTGRES) if isinstance(value, dict) else None
        if store not in (POSTGRES, FSSPEC):
            raise UsageError(f"upload: not a reference to a stored upload: {value!r}")
        try:
            return cls(
                name=str(value["name"]),
                size=int(value["size"]),
                sha256=str(value["sha256"]),
                store=store,
                oid=int(value["oid"]) if store == POSTGRES else None,
                url=str(value["url"]) if store == FSSPEC else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"upload: malformed reference {value!r}: {exc}") from None

    def __str__(self) -> str:
        where = f"large object {self.oid}" if self.store == POSTGRES else self.url
        return f"upload {self.name} ({where})"


class Readable(Protocol):
    """What an upload is copied from: a binary file, standard input, a socket's reader."""

    def read(self, size: int = -1, /) -> bytes: ...


class UploadStore(Protocol):
    """Where uploads are written, read by byte range, and removed."""

    def write(
        self, stream: Readable, name: str, on_progress: Callable[[int], None] | None = None
    ) -> UploadRef:
        """Copy ``stream`` in, ``WRITE_BYTES`` at a time; nothing is left if it fails part way."""
        ...

    def open(self, ref: UploadRef) -> IO[bytes]:
        """A seekable buffered binary reader; ImportPathError if the data is gone."""
        ...

    def remove(self, ref: UploadRef) -> bool:
        """Remove the data; False if it was already gone."""
        ...

    def exists(self, ref: UploadRef) -> bool: ...


class Blocks:
    """A stream's blocks of ``WRITE_BYTES``, hashed and counted as they pass.

    Memory stays one block whatever the stream; ``on_progress(n)`` is told
    each block's size.
    """

    def __init__(self, stream: Readable, on_progress: Callable[[int], None] | None) -> None:
        self._stream = stream
        self._on_progress = on_progress
        self._digest = hashlib.sha256()
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        while block := self._stream.read(WRITE_BYTES):
            self._digest.update(block)
            self.size += len(block)
            yield block
            if self._on_progress is not None:
                self._on_progress(len(block))

    def ref(self, name: str, **where: Any) -> UploadRef:
        """The reference of what passed, once the stream is exhausted."""
        return UploadRef(name=name, size=self.size, sha256=self._digest.hexdigest(), **where)


class SeekableRaw(io.RawIOBase):
    """The base of a store's raw reader: readable and seekable; buffered by the store's ``open``."""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True
