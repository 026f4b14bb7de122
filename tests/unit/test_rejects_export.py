"""Unit tests for worker.rejects_export: the files written from rejected rows (no services)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from worker.ledger import RejectedRow
from worker.parsing import plan_chunks, read_chunk, read_header
from worker.rejects_export import EXTRA_COLUMNS, write_csv, write_jsonl

HEADER = ["title", "status", "owner_email"]


def read_csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- CSV ---------------------------------------------------------------------------


def test_csv_columns_line_and_error(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    write_csv(
        [
            RejectedRow(3, "status", "status 'done' is not one of …", "Fix bike,done,a@b.c"),
            RejectedRow(7, None, "expected 3 fields, found 2", "Too few,active"),
        ],
        HEADER,
        out,
    )
    assert read_csv(out) == [
        ["title", "status", "owner_email", "_line", "_error"],
        ["Fix bike", "done", "a@b.c", "3", "status: status 'done' is not one of …"],
        ["Too few", "active", "", "7", "expected 3 fields, found 2"],
    ]
    assert EXTRA_COLUMNS == ("_line", "_error")


def test_csv_hostile_values_read_back_exactly(tmp_path: Path) -> None:
    """Quotes, commas, newlines (LF and CRLF), tabs, backslashes, emoji survive the trip."""
    values = [
        ["a, b", 'say "hi"', "x@y.z"],
        ["two\nlines", "bogus", "x@y.z"],
        ["crlf\r\ninside", "bogus", "x@y.z"],
        ["tab\there \\ back\\slash", "bogus", "x@y.z"],
        ["😀" * 201, "active", "x@y.z"],
        ["  spaces  ", " active ", " x@y.z "],
        ["'; DROP TABLE todos;--", "active", "x@y.z"],
    ]
    rejects = []
    for n, row in enumerate(values):
        buf = []
        csv.writer(_Sink(buf), lineterminator="\n").writerow(row)
        rejects.append(RejectedRow(n + 2, "title", "some reason", "".join(buf).rstrip("\n")))
    out = tmp_path / "r.csv"
    write_csv(rejects, HEADER, out)
    rows = read_csv(out)
    assert rows[0] == [*HEADER, "_line", "_error"]
    assert [r[:3] for r in rows[1:]] == values
    assert [r[3:] for r in rows[1:]] == [[str(n + 2), "title: some reason"] for n in range(7)]


class _Sink:
    def __init__(self, parts: list[str]) -> None:
        self.parts = parts

    def write(self, s: str) -> int:
        self.parts.append(s)
        return len(s)


def test_csv_extra_fields_are_kept_in_the_last_column(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    write_csv(
        [RejectedRow(2, None, "expected 3 fields, found 5", "T,active,a@b.c,extra,more")],
        HEADER,
        out,
    )
    assert read_csv(out)[1] == [
        "T",
        "active",
        "a@b.c,extra,more",
        "2",
        "expected 3 fields, found 5",
    ]


@pytest.mark.parametrize(
    "raw",
    [
        '"never closed,active,a@b.c\nmore,active,a@b.c',  # unterminated quote, two lines
        'x"y,"text "after" quote,a@b.c',  # text after a closing quote
        "bare\rreturn,active,a@b.c",  # a line break in an unquoted field
    ],
)
def test_csv_malformed_raw_keeps_its_text(tmp_path: Path, raw: str) -> None:
    """Not well-formed CSV: the record's text, verbatim, in the first column."""
    out = tmp_path / "r.csv"
    write_csv([RejectedRow(5, None, "malformed CSV: …", raw)], HEADER, out)
    assert read_csv(out)[1] == [raw, "", "", "5", "malformed CSV: …"]


def test_csv_replacement_characters_are_kept(tmp_path: Path) -> None:
    """An undecodable row's raw text holds U+FFFD where its bad bytes were."""
    out = tmp_path / "r.csv"
    write_csv([RejectedRow(5, "title", "invalid UTF-8", "Caf\ufffd,active,a@b.c")], HEADER, out)
    assert read_csv(out)[1] == ["Caf\ufffd", "active", "a@b.c", "5", "title: invalid UTF-8"]


def test_csv_missing_raw_and_line(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    write_csv([RejectedRow(None, None, "lost", None)], HEADER, out)
    assert read_csv(out)[1] == ["", "", "", "", "lost"]


def test_csv_underscore_columns_of_the_input_are_replaced(tmp_path: Path) -> None:
    """Re-exporting a fixed rejects file: its old _line/_error give way to the new ones."""
    header = ["title", "_line", "status", "owner_email", "_error"]
    out = tmp_path / "r.csv"
    write_csv([RejectedRow(4, "status", "bad", "T,3,nope,a@b.c,status: old reason")], header, out)
    assert read_csv(out) == [
        ["title", "status", "owner_email", "_line", "_error"],
        ["T", "nope", "a@b.c", "4", "status: bad"],
    ]


def test_csv_export_imports_as_it_is(tmp_path: Path) -> None:
    """The written file parses with the importer's own reader, _ columns ignored."""
    out = tmp_path / "r.csv"
    write_csv(
        [
            RejectedRow(2, "status", "bad", '"multi\nline, ""q""",nope,a@b.c'),
            RejectedRow(4, "title", "bad", "plain,active,a@b.c"),
        ],
        HEADER,
        out,
    )
    header, _ = read_header(out, "csv")
    assert header == [*HEADER, "_line", "_error"]
    records = [
        r for span in plan_chunks(out, "csv", 10) for r in read_chunk(out, "csv", span, header)
    ]
    assert [(r.line, r.values) for r in records] == [
        (2, {"title": 'multi\nline, "q"', "status": "nope", "owner_email": "a@b.c"}),
        (4, {"title": "plain", "status": "active", "owner_email": "a@b.c"}),
    ]


# --- JSON Lines ---------------------------------------------------------------------


def test_jsonl_object_plus_line_and_error(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    write_jsonl(
        [
            RejectedRow(
                2,
                "status",
                "status 'done' …",
                '{"title": "B", "status": "done", "owner_email": "a@b.c", "_line": 99}',
            ),
            RejectedRow(3, "title", "column title: expected a string", '{"title": {"t": [1, 2]}}'),
            RejectedRow(4, "title", "title is missing", '{"title": null, "n": 1.5, "b": true}'),
        ],
        out,
    )
    assert read_jsonl(out) == [
        {
            "title": "B",
            "status": "done",
            "owner_email": "a@b.c",
            "_line": 2,
            "_error": "status: status 'done' …",
        },
        {"title": {"t": [1, 2]}, "_line": 3, "_error": "title: column title: expected a string"},
        {"title": None, "n": 1.5, "b": True, "_line": 4, "_error": "title: title is missing"},
    ]


@pytest.mark.parametrize(
    "raw",
    [
        '{"title": "C", "owner_email": "a@b',  # truncated
        '["an", "array"]',
        '"a string"',
        "null",
        "42",
        "",
        "{not json at all",
    ],
)
def test_jsonl_malformed_raw_keeps_its_text(tmp_path: Path, raw: str) -> None:
    out = tmp_path / "r.jsonl"
    write_jsonl([RejectedRow(7, None, "malformed JSON: …", raw)], out)
    assert read_jsonl(out) == [{"_raw": raw, "_line": 7, "_error": "malformed JSON: …"}]


def test_jsonl_raw_control_characters_keep_the_object(tmp_path: Path) -> None:
    """The importer accepts a raw tab inside a JSON string; the export must too."""
    raw = '{"title": "tab\there", "status": "later", "owner_email": "a@b.c"}'
    out = tmp_path / "r.jsonl"
    write_jsonl([RejectedRow(2, "status", "bad", raw)], out)
    assert read_jsonl(out) == [
        {
            "title": "tab\there",
            "status": "later",
            "owner_email": "a@b.c",
            "_line": 2,
            "_error": "status: bad",
        }
    ]


def test_jsonl_unicode_is_written_as_utf8(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    write_jsonl([RejectedRow(1, None, "é", '{"title": "😀 \\u00e9"}')], out)
    text = out.read_text(encoding="utf-8")
    assert "😀 é" in text and text.endswith("\n") and text.count("\n") == 1
