"""Producer streams for upload tests: one that is never held whole, one that breaks part way."""

from __future__ import annotations

import io
from typing import Any

MIB = 1024 * 1024


class Filler(io.RawIOBase):
    """``total`` bytes of newlines, made as they are read (never held whole)."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.left = total

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self.left)
        b[:n] = b"\n" * n
        self.left -= n
        return n


class Failing(io.RawIOBase):
    """A producer's stream that breaks after a few MiB."""

    def __init__(self, after: int = 3 * MIB) -> None:
        super().__init__()
        self.after, self.sent = after, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.sent >= self.after:
            raise OSError("connection reset by producer")
        n = len(b)
        b[:n] = b"a" * n
        self.sent += n
        return n
