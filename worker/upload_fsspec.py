"""The object-store upload store: any fsspec URL (``s3://``, ``gs://``, ``file://`` …).

For scale-out, uploads can live outside the database: ``BULKOPS_UPLOAD_STORE``
names a base URL, each upload becomes one object under it, written in
``WRITE_BYTES`` blocks, and chunks read their byte ranges with
``cat_file(path, start, end)`` (one ranged request per read buffer), so
neither side ever holds the whole file. fsspec is an optional extra
(``pip install 'bulkops[fsspec]'``) and each scheme may need its own
package (s3fs, gcsfs); a missing one is a ConfigError that names it.
Credentials come from the backend's own environment (``AWS_*``,
``GOOGLE_APPLICATION_CREDENTIALS``).
"""

from __future__ import annotations

import contextlib
import io
import re
import uuid
from collections.abc import Callable
from typing import IO, Any

from worker.errors import ConfigError, ImportPathError
from worker.upload_store import (
    FSSPEC,
    READ_BUFFER_BYTES,
    Blocks,
    Readable,
    SeekableRaw,
    UploadRef,
)


def filesystem(url: str) -> tuple[Any, str]:
    """(the fsspec filesystem, the path in it) of ``url``; ConfigError if it cannot be used."""
    try:
        import fsspec
    except ImportError:
        raise ConfigError(
            f"upload store {url}: needs fsspec (pip install 'bulkops[fsspec]')"
        ) from None
    try:
        fs, path = fsspec.url_to_fs(url)
    except ImportError as exc:  # the scheme's package: "Install s3fs to access S3"
        raise ConfigError(f"upload store {url}: {exc}") from None
    except ValueError as exc:  # "Protocol not known: …"
        raise ConfigError(f"upload store {url}: {exc}") from None
    return fs, str(path)


def _object_name(name: str) -> str:
    """A fresh object name that still says which file it holds."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[-80:] or "upload"
    return f"{uuid.uuid4().hex}-{safe}"


class FsspecStore:
    """Uploads written under ``base_url``; each read back from the URL its reference names."""

    def __init__(self, base_url: str | None = None) -> None:
        self.base_url = base_url

    def write(
        self, stream: Readable, name: str, on_progress: Callable[[int], None] | None = None
    ) -> UploadRef:
        """One new object; a failure part way removes what was written."""
        assert self.base_url is not None, "a store to write to needs its base URL"
        fs, base = filesystem(self.base_url)
        if getattr(fs, "local_file", False):
            fs.makedirs(base, exist_ok=True)  # object stores have no folders to make
        path = f"{base.rstrip('/')}/{_object_name(name)}"
        blocks = Blocks(stream, on_progress)
        try:
            with fs.open(path, "wb") as f:
                for block in blocks:
                    f.write(block)
        except BaseException:
            with contextlib.suppress(Exception):
                fs.rm_file(path)
            raise
        return blocks.ref(name, store=FSSPEC, url=fs.unstrip_protocol(path))

    def open(self, ref: UploadRef) -> IO[bytes]:
        return io.BufferedReader(RangeReader(ref), buffer_size=READ_BUFFER_BYTES)

    def remove(self, ref: UploadRef) -> bool:
        fs, path = filesystem(_url(ref))
        try:
            fs.rm_file(path)
        except FileNotFoundError:
            return False
        return True

    def exists(self, ref: UploadRef) -> bool:
        fs, path = filesystem(_url(ref))
        return bool(fs.exists(path))


def _url(ref: UploadRef) -> str:
    assert ref.url is not None, ref
    return ref.url


class RangeReader(SeekableRaw):
    """A raw, seekable binary stream over one object: each read is ``cat_file(start, end)``.

    The size is the one recorded when it was stored; nothing is read ahead.
    """

    def __init__(self, ref: UploadRef) -> None:
        super().__init__()
        self._ref = ref
        self._fs, self._path = filesystem(_url(ref))
        self._size = ref.size
        self._pos = 0
        if not self._fs.exists(self._path):
            raise ImportPathError(f"{ref} is no longer stored")

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        end = min(self._pos + len(view), self._size)
        if end <= self._pos:
            return 0
        try:
            data = self._fs.cat_file(self._path, start=self._pos, end=end)
        except FileNotFoundError:
            raise ImportPathError(f"{self._ref} is no longer stored") from None
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos
