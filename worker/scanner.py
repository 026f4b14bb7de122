"""The byte-level scanner that finds record boundaries in import files.

One scanner serves both planning (cut the file into chunks) and reading (the
records of one chunk), so both always agree on where records are. Physical
lines end in LF or CRLF and, in CSV, also in a lone CR (older spreadsheet
exports write those); a line end inside a quoted CSV field is data, but still
counts as a line, as csv.reader's ``line_num`` counts it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

# A record larger than this is rejected without being held in memory whole.
MAX_RECORD_BYTES = 32 * 1024 * 1024
_PIECE_BYTES = 1024 * 1024  # readline() limit: bounds memory for huge lines

# CSV scanner states, as in the csv module's reader.
_START, _FIELD, _QUOTED, _QUOTE_IN_QUOTED = range(4)
_QUOTE = ord('"')
_COMMA = ord(",")
_LINE_ENDS = (b"\n", b"\r")
_PHYSICAL_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+")


@dataclass(frozen=True)
class RawRecord:
    start: int
    end: int
    line: int  # physical line where the record starts
    next_line: int  # physical line just after it
    data: bytes  # the record's bytes; only a prefix when size > MAX_RECORD_BYTES
    size: int
    terminated: bool  # False: end of file inside a quoted field
    blank: bool  # only whitespace (JSONL) or only a line break (CSV)


def _advance(buf: bytes, state: int) -> int:
    """Run the CSV state machine over ``buf`` (no newlines); return the new state.

    Only quote characters need a look; the commas that matter are the one just
    before a quote (does the quote open a field?) and the last byte.
    """
    i, n = 0, len(buf)
    while i < n:
        if state == _QUOTED:
            j = buf.find(b'"', i)
            if j < 0:
                return _QUOTED
            state, i = _QUOTE_IN_QUOTED, j + 1
        elif state == _QUOTE_IN_QUOTED:
            c = buf[i]
            state = _QUOTED if c == _QUOTE else _START if c == _COMMA else _FIELD
            i += 1
        elif state == _START and buf[i] == _QUOTE:
            state, i = _QUOTED, i + 1
        else:  # unquoted text: a quote here opens a field only right after a comma
            j = buf.find(b'"', i)
            if j < 0:
                return _START if buf[n - 1] == _COMMA else _FIELD
            state = _QUOTED if j > i and buf[j - 1] == _COMMA else _FIELD
            i = j + 1
    return state


def _split_lone_crs(piece: bytes, f: BinaryIO) -> list[bytes]:
    """Split a CSV piece at every line end: LF, CRLF and a lone CR (old spreadsheet exports).

    A piece ending in CR without LF was cut by the readline limit or EOF: when
    the next byte is LF it belongs to this line end, so a CRLF is never split.
    """
    lines = _PHYSICAL_LINE.findall(piece)
    if lines[-1].endswith(b"\r"):
        nxt = f.read(1)
        if nxt == b"\n":
            lines[-1] += nxt
        elif nxt:
            f.seek(-1, io.SEEK_CUR)
    return lines


def scan(
    f: BinaryIO, pos: int, line: int, *, csv_mode: bool, keep: bool, stop: int | None = None
) -> Iterator[RawRecord]:
    """Yield the raw records from byte ``pos`` (at physical ``line``) up to ``stop``/EOF.

    Physical lines end in LF or CRLF and, in CSV, also in a lone CR; a line
    end inside a quoted field is data but still counts as a line.
    """
    f.seek(pos)
    readline = f.readline
    line_ends = _LINE_ENDS if csv_mode else b"\n"
    pending: list[bytes] = []  # physical lines split off the last piece, in reverse order
    while stop is None or pos < stop:
        start, first_line = pos, line
        parts: list[bytes] = []
        size, blank, state = 0, True, _START
        while True:
            if pending:
                piece = pending.pop()
            else:
                piece = readline(_PIECE_BYTES)
                if not piece:
                    break
                if (
                    csv_mode
                    and b"\r" in piece
                    and (piece[-2:] != b"\r\n" or piece.count(b"\r") > 1)
                ):
                    pending = _split_lone_crs(piece, f)
                    pending.reverse()
                    piece = pending.pop()
            size += len(piece)
            pos += len(piece)
            if keep and size <= MAX_RECORD_BYTES:
                parts.append(piece)
            ended = piece.endswith(line_ends)
            content = piece[:-1] if ended else piece  # a CRLF's CR is left: it is harmless
            if ended:
                line += 1
            if csv_mode:
                blank = blank and not content.strip(b"\r")
                state = _advance(content, state)
            else:
                blank = blank and not content.strip()
            if ended and state != _QUOTED:
                break
        if size == 0:
            return
        yield RawRecord(
            start, pos, first_line, line, b"".join(parts), size, state != _QUOTED, blank
        )


def line_end(data: bytes) -> int:
    """The length of the line end ``data`` ends in: 2 for CRLF, 1 for LF or CR, else 0."""
    last = data[-1:]
    if last == b"\n":
        return 2 if data[-2:-1] == b"\r" else 1
    return 1 if last == b"\r" else 0


def strip_newline(data: bytes) -> bytes:
    end = line_end(data)
    return data[:-end] if end else data
