"""Import files confined to BULKOPS_IMPORT_ROOT, by descriptor.

A path checked by name and opened again by name can be swapped for a symlink
in between. Here nothing is ever opened by name from outside the root: every
open walks from a descriptor of the import root, one component at a time,
with ``O_NOFOLLOW``, so a symlink anywhere in the path is refused (the simple
rule that makes the walk safe; a symlink that stays inside the root is refused
too, and the message names the real file to give instead). The opened
descriptor itself is then checked (a regular file) and its identity (device,
inode, size, mtime) is recorded; every later open compares the new
descriptor's identity with the recorded one, and so does leaving a ``with``
block, so a file replaced or rewritten after it was checked is never read as
if it were the same file.

Limit: a rewrite that keeps the size and lands within the file system's
mtime granularity (and the same inode) cannot be told apart from no change.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePath
from types import TracebackType
from typing import Any, BinaryIO

from worker.config import get_settings
from worker.errors import ImportPathError, UsageError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused after fstat.
_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC


class FileChangedError(ImportPathError):
    """The import file changed after it was checked (when the job was planned).

    Raised when a later open finds another file under the name (a new inode) or
    the same file with another size or mtime, and when a file changes while it
    is being read. Nothing of the new content is loaded; the job fails.
    """


@dataclass(frozen=True)
class FileIdentity:
    """What tells one version of a file from another: device, inode, size, mtime."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def to_json(self) -> dict[str, int]:
        return {"dev": self.dev, "ino": self.ino, "size": self.size, "mtime_ns": self.mtime_ns}

    @classmethod
    def from_json(cls, data: Any) -> FileIdentity:
        fields = ("dev", "ino", "size", "mtime_ns")
        if not isinstance(data, dict) or not all(isinstance(data.get(f), int) for f in fields):
            raise UsageError(f"malformed file identity in the job's parameters: {data!r}")
        return cls(*(int(data[f]) for f in fields))

    def differences(self, other: FileIdentity) -> list[str]:
        names = {"dev": "device", "ino": "inode", "size": "size", "mtime_ns": "mtime"}
        return [label for f, label in names.items() if getattr(self, f) != getattr(other, f)]


def _changed(relpath: str, was: FileIdentity, now: FileIdentity) -> FileChangedError:
    differ = "/".join(was.differences(now))
    return FileChangedError(
        f"{relpath}: the file changed after the job was planned ({differ} differ: size "
        f"{was.size} -> {now.size} bytes); nothing of the new content was loaded; "
        "submit it again"
    )


class _CheckedReader(io.BufferedReader):
    """A reader that checks, when its ``with`` block ends, that the file did not change."""

    def __init__(self, raw: io.FileIO, source: ConfinedFile) -> None:
        super().__init__(raw)
        self._source = source

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None and not self.closed:
                self._source.check(FileIdentity.of(os.fstat(self.fileno())))
        finally:
            self.close()


@dataclass(frozen=True)
class ConfinedFile:
    """A regular file under the import root, as it was when checked.

    Duck-types the part of :class:`pathlib.Path` that worker.parsing uses
    (``name``, ``open("rb")``). Every open walks from the root again by
    descriptor and raises :class:`FileChangedError` if the file is not the one
    recorded in ``identity``.
    """

    root: Path  # resolved import root
    relpath: str
    identity: FileIdentity

    @property
    def name(self) -> str:
        return PurePath(self.relpath).name

    def __str__(self) -> str:
        return self.relpath

    def check(self, now: FileIdentity) -> None:
        if now != self.identity:
            raise _changed(self.relpath, self.identity, now)

    def open(self, mode: str = "rb") -> BinaryIO:
        if mode != "rb":
            raise UsageError(f"import files are opened read-only in binary mode, not {mode!r}")
        fd, _ = _open_under(self.root, self.relpath, self.relpath)
        try:
            self.check(FileIdentity.of(os.fstat(fd)))
            return _CheckedReader(io.FileIO(fd, "rb", closefd=True), self)
        except BaseException:
            os.close(fd)
            raise


def _parts(path: str | PurePath, root: Path, configured: Path) -> tuple[str, ...] | None:
    """The path's components relative to the root; None when it is absolute and not under it."""
    candidate = PurePath(path)
    if not candidate.is_absolute():
        return candidate.parts
    for base in (root, configured):
        if candidate.is_relative_to(base):
            return candidate.relative_to(base).parts
    return None


def _outside(shown: str, root: Path) -> ImportPathError:
    return ImportPathError(
        f"{shown}: outside the import root {root} (set BULKOPS_IMPORT_ROOT); refused"
    )


def _symlink(shown: str, root: Path, names: list[str], final: bool) -> ImportPathError:
    where = "a symbolic link" if final else f"{'/'.join(names)} is a symbolic link"
    try:  # resolved by name for the message only (it may change meanwhile)
        target = Path(os.path.realpath(root.joinpath(*names)))
        if not target.exists():
            hint = "that leads nowhere"
        elif target.is_relative_to(root):
            hint = f"to {target.relative_to(root)}, inside the root: give that path instead"
        else:
            hint = "leading outside the import root"
    except OSError:
        hint = "that changed while it was checked"
    return ImportPathError(
        f"{shown}: {where} ({hint}); symlinks are refused under the import root {root}, "
        "so that the file checked is the file read"
    )


def _explain(
    exc: OSError, shown: str, root: Path, dir_fd: int, names: list[str], final: bool
) -> ImportPathError:
    """A clear ImportPathError for a failed open of ``names[-1]`` in ``dir_fd``."""
    try:
        st: os.stat_result | None = os.stat(names[-1], dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        st = None
    if st is not None and stat.S_ISLNK(st.st_mode):
        return _symlink(shown, root, names, final)
    if exc.errno == errno.ENOENT or st is None:
        return ImportPathError(f"{shown}: no such file under the import root {root}")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ImportPathError(f"{shown}: not readable")
    if exc.errno == errno.ENOTDIR:
        return ImportPathError(
            f"{shown}: no such file under the import root {root} "
            f"({'/'.join(names)} is not a directory)"
        )
    if not stat.S_ISREG(st.st_mode):
        return ImportPathError(f"{shown}: not a regular file")
    return ImportPathError(f"{shown}: cannot be opened: {exc.strerror}")


def _open_under(root: Path, path: str | PurePath, shown: str) -> tuple[int, str]:
    """Open ``path`` under ``root`` by descriptor; (fd of a regular file, path from the root)."""
    parts = _parts(path, root, root)
    if parts is None:
        raise _outside(shown, root)
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ImportPathError(f"the import root {root} cannot be opened: {exc.strerror}") from None
    dirs = [root_fd]  # the directory descriptors down to the current one
    names: list[str] = []
    fd = -1
    try:
        for i, part in enumerate(parts):
            if part == "..":
                if not names:
                    raise _outside(shown, root)
                os.close(dirs.pop())
                names.pop()
                continue
            final = i == len(parts) - 1
            names.append(part)
            try:
                opened = os.open(part, _FILE_FLAGS if final else _DIR_FLAGS, dir_fd=dirs[-1])
            except OSError as exc:
                raise _explain(exc, shown, root, dirs[-1], names, final) from None
            if final:
                fd = opened
            else:
                dirs.append(opened)
        if fd < 0:  # the path names a directory (the root, or one reached by "..")
            fd = os.dup(dirs[-1])
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ImportPathError(f"{shown}: not a regular file")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd, "/".join(names)
    finally:
        for d in dirs:
            os.close(d)


def confine(
    path: str | Path, root: Path | None = None, expect: FileIdentity | None = None
) -> tuple[ConfinedFile, str]:
    """The file for ``path`` under the import root, and its path relative to the root.

    Relative paths are taken from the root; absolute paths must be inside it.
    Refused with an ImportPathError: a missing file, ``..`` leading out, a
    symlink anywhere in the path, a non-regular file, an unreadable one. With
    ``expect`` (the identity recorded when the job was planned), another
    version of the file raises :class:`FileChangedError`.
    """
    configured = Path(os.path.abspath(root or get_settings().import_root))
    resolved = configured.resolve()
    shown = str(path)
    parts = _parts(path, resolved, configured)
    if parts is None:
        raise _outside(shown, resolved)
    fd, relpath = _open_under(resolved, PurePath(*parts) if parts else ".", shown)
    try:
        identity = FileIdentity.of(os.fstat(fd))
    finally:
        os.close(fd)
    if expect is not None and identity != expect:
        raise _changed(relpath, expect, identity)
    return ConfinedFile(resolved, relpath, identity), relpath
