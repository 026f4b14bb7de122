"""Unit tests for worker.parsing: chunk planning and record reading (no services)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from worker import parsing, scanner
from worker.errors import InputFormatError, UsageError
from worker.parsing import ChunkSpan, Record, plan_chunks, read_chunk, read_header

HEADER = "title,status,owner_email\n"


def write(tmp_path: Path, data: bytes | str, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def read_all(path: Path, fmt: str = "csv", rows_per_chunk: int = 10**9) -> list[Record]:
    header = read_header(path, fmt)[0]
    return [
        rec
        for span in plan_chunks(path, fmt, rows_per_chunk)
        for rec in read_chunk(path, fmt, span, header)
    ]


# --- read_header -------------------------------------------------------------------


def test_header_names_and_offset(tmp_path: Path) -> None:
    path = write(tmp_path, b"\xef\xbb\xbf title , status,owner_email\r\nx,active,a@b.c\r\n")
    names, offset = read_header(path, "csv")
    assert names == ["title", "status", "owner_email"]
    assert offset == len(b"\xef\xbb\xbf title , status,owner_email\r\n")


def test_header_jsonl_has_no_header(tmp_path: Path) -> None:
    assert read_header(write(tmp_path, '{"a": "1"}\n', "in.jsonl"), "jsonl") == ([], 0)


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf"])
def test_header_empty_file(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(InputFormatError, match="empty"):
        read_header(write(tmp_path, data), "csv")


def test_header_duplicate_column_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputFormatError, match="duplicate column.*: status"):
        read_header(write(tmp_path, "title,status, status\n"), "csv")


def test_header_invalid_utf8(tmp_path: Path) -> None:
    with pytest.raises(InputFormatError, match="not valid UTF-8"):
        read_header(write(tmp_path, b"ti\xfftle,status\n"), "csv")


def test_header_column_without_name(tmp_path: Path) -> None:
    with pytest.raises(InputFormatError, match="column 4 has no name"):
        read_header(write(tmp_path, "title,status,owner_email,\n"), "csv")


def test_unknown_format_and_bad_chunk_size(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER)
    with pytest.raises(UsageError, match="unknown format"):
        read_header(path, "xlsx")
    with pytest.raises(UsageError):
        plan_chunks(path, "csv", 0)


# --- CSV records -------------------------------------------------------------------


def test_csv_values_by_header(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "Buy milk,active,a@b.c\nWalk,,d@e.f")  # no final newline
    recs = read_all(path)
    assert [r.values for r in recs] == [
        {"title": "Buy milk", "status": "active", "owner_email": "a@b.c"},
        {"title": "Walk", "status": "", "owner_email": "d@e.f"},
    ]
    assert [(r.line, r.raw, r.error) for r in recs] == [
        (2, "Buy milk,active,a@b.c", None),
        (3, "Walk,,d@e.f", None),
    ]


def test_csv_underscore_columns_dropped_but_kept_in_raw(tmp_path: Path) -> None:
    path = write(
        tmp_path, "_line,title,status,owner_email,_error\n7,X,active,a@b.c,title is empty\n"
    )
    [rec] = read_all(path)
    assert rec.values == {"title": "X", "status": "active", "owner_email": "a@b.c"}
    assert rec.raw == "7,X,active,a@b.c,title is empty"


def test_csv_rfc4180_quoting(tmp_path: Path) -> None:
    data = (
        HEADER + '"a, b","active","x@y.z"\n"say ""hi""",active,x@y.z\n"two\nlines",active,x@y.z\n'
    )
    recs = read_all(write(tmp_path, data))
    assert [r.values["title"] for r in recs if r.values] == ["a, b", 'say "hi"', "two\nlines"]
    assert recs[2].raw == '"two\nlines",active,x@y.z'


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
@pytest.mark.parametrize("bom", ["", "\ufeff"])
def test_csv_line_numbers_count_embedded_newlines(tmp_path: Path, eol: str, bom: str) -> None:
    rows = [
        "a,active,x@y.z",
        f'"multi{eol}line{eol}title",active,x@y.z',
        "",  # a blank line: skipped but counted
        "b,active,x@y.z",
        f'c,"{eol}",x@y.z',
    ]
    data = bom + HEADER.replace("\n", eol) + eol.join(rows) + eol
    recs = read_all(write(tmp_path, data))
    assert [r.line for r in recs] == [2, 3, 7, 8]
    assert all(r.error is None for r in recs)
    assert recs[1].values and recs[1].values["title"] == f"multi{eol}line{eol}title"
    assert recs[3].values and recs[3].values["status"] == eol


def test_csv_stray_quote_in_unquoted_field_is_literal(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + '5" screen,active,a@b.c\nnext,active,a@b.c\n')
    recs = read_all(path)
    assert [(r.line, r.values and r.values["title"]) for r in recs] == [
        (2, '5" screen'),
        (3, "next"),
    ]


@pytest.mark.parametrize(
    ("row", "error"),
    [
        ("a,active,x@y.z,extra", "expected 3 fields, found 4"),
        ("a,active", "expected 3 fields, found 2"),
    ],
)
def test_csv_wrong_field_count(tmp_path: Path, row: str, error: str) -> None:
    recs = read_all(write(tmp_path, HEADER + row + "\nok,active,x@y.z\n"))
    assert (recs[0].values, recs[0].error, recs[0].raw, recs[0].line) == (None, error, row, 2)
    assert recs[1].values is not None


def test_csv_text_after_closing_quote_is_a_reject(tmp_path: Path) -> None:
    recs = read_all(write(tmp_path, HEADER + '"ab"c,active,x@y.z\nok,active,x@y.z\n'))
    assert recs[0].values is None and recs[0].error and "malformed CSV" in recs[0].error
    assert recs[1].values is not None and recs[1].line == 3


def test_csv_invalid_utf8_is_a_reject_not_an_exception(tmp_path: Path) -> None:
    data = HEADER.encode() + b"good,active,a@b.c\nbad\xff,active,a@b.c\nalso good,active,a@b.c\n"
    recs = read_all(write(tmp_path, data))
    assert [r.values is not None for r in recs] == [True, False, True]
    bad = recs[1]
    assert bad.error == "invalid UTF-8 at byte offset 3 of the record (column title)"
    assert bad.column == "title" and bad.line == 3 and bad.raw == "bad\ufffd,active,a@b.c"


def test_csv_nul_byte_names_the_column(tmp_path: Path) -> None:
    recs = read_all(write(tmp_path, HEADER + "ok,active,a\x00@b.c\nfine,active,a@b.c\n"))
    assert (recs[0].values, recs[0].error, recs[0].column) == (
        None,
        "NUL byte in column owner_email",
        "owner_email",
    )
    assert recs[1].values is not None


def test_csv_huge_field_is_parsed(tmp_path: Path) -> None:
    big = "x" * (10 * 1024 * 1024)
    recs = read_all(write(tmp_path, HEADER + f'"{big}",active,a@b.c\nnext,active,a@b.c\n'))
    assert recs[0].values is not None and recs[0].values["title"] == big
    assert recs[1].line == 3


def test_record_over_the_limit_is_rejected_with_a_preview(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parsing, "MAX_RECORD_BYTES", 4096)
    monkeypatch.setattr(scanner, "MAX_RECORD_BYTES", 4096)
    monkeypatch.setattr(scanner, "_PIECE_BYTES", 1000)
    path = write(tmp_path, HEADER + "y" * 10_000 + ",active,a@b.c\nnext,active,a@b.c\n")
    recs = read_all(path)
    assert recs[0].values is None and recs[0].error and "larger than" in recs[0].error
    assert len(recs[0].raw) < 2000
    assert recs[1].values == {"title": "next", "status": "active", "owner_email": "a@b.c"}
    assert recs[1].line == 3


def test_csv_unterminated_quote_at_end_of_file(tmp_path: Path) -> None:
    data = HEADER + 'ok,active,a@b.c\n"never closed,active,a@b.c\nmore,active,a@b.c\n'
    path = write(tmp_path, data)
    assert sum(s.records for s in plan_chunks(path, "csv", 1)) == 2
    recs = read_all(path)
    assert len(recs) == 2
    assert (recs[1].values, recs[1].error, recs[1].line) == (None, "unterminated quoted field", 3)
    assert recs[1].raw == '"never closed,active,a@b.c\nmore,active,a@b.c'


# --- JSON Lines --------------------------------------------------------------------


def test_jsonl_records(tmp_path: Path) -> None:
    lines = [
        '{"title": "a", "status": "active", "owner_email": "x@y.z", "_line": 4}',
        "",
        "   ",
        '{"title": 42, "flag": true, "ratio": 1.5, "created_at": null}',
        "{not json",
        '["an", "array"]',
        '{"title": {"nested": 1}}',
        '{"title": ["a"]}',
        '{"title": "a\\u0000b"}',
        '{"title": "bad \xff"}',
    ]
    path = write(
        tmp_path, "\r\n".join(lines).encode("utf-8").replace(b"\xc3\xbf", b"\xff"), "in.jsonl"
    )
    recs = read_all(path, "jsonl")
    assert [r.line for r in recs] == [1, 4, 5, 6, 7, 8, 9, 10]
    assert recs[0].values == {"title": "a", "status": "active", "owner_email": "x@y.z"}
    assert recs[0].raw == lines[0]
    assert recs[1].values == {"title": "42", "flag": "True", "ratio": "1.5"}
    assert recs[2].values is None and recs[2].error and recs[2].error.startswith("malformed JSON: ")
    assert recs[3].error and recs[3].error.startswith("expected a JSON object")
    assert (recs[4].error, recs[4].column) == (
        "column title: expected a string, got object",
        "title",
    )
    assert recs[5].error == "column title: expected a string, got array"
    assert (recs[6].error, recs[6].column) == ("NUL byte in column title", "title")
    assert recs[7].error and recs[7].error.startswith("invalid UTF-8 at byte offset")


def test_jsonl_raw_nul_byte(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"title": "a\x00b"}\n{"title": 1}\x00\n', "in.jsonl")
    recs = read_all(path, "jsonl")
    assert [(r.error, r.column) for r in recs] == [
        ("NUL byte in column title", "title"),
        ("NUL byte in the record", None),
    ]


def test_jsonl_bom_is_skipped(tmp_path: Path) -> None:
    recs = read_all(write(tmp_path, '\ufeff{"name": "n"}\n', "in.jsonl"), "jsonl")
    assert [(r.line, r.values) for r in recs] == [(1, {"name": "n"})]


# --- planning ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fmt"),
    [("", "csv"), (HEADER, "csv"), (HEADER + "\n\n", "csv"), ("", "jsonl"), ("\n  \n", "jsonl")],
)
def test_plan_empty_inputs(tmp_path: Path, data: str, fmt: str) -> None:
    assert plan_chunks(write(tmp_path, data), fmt, 10) == []


def test_plan_spans(tmp_path: Path) -> None:
    data = HEADER + "a,active,x@y.z\n" + '"b\nb",active,x@y.z\n' + "\n" + "c,active,x@y.z\n"
    path = write(tmp_path, data)
    raw = data.encode()
    spans = plan_chunks(path, "csv", 2)
    second = raw.index(b"c,active")
    assert spans == [
        ChunkSpan(0, len(HEADER), raw.index(b"\n\nc") + 1, 2, 2),
        ChunkSpan(1, second, len(raw), 6, 1),
    ]


MESSY_CSV = (
    "\ufefftitle,status,owner_email,_error\r\n"
    "plain,active,a@b.c,\r\n"
    '"multi\r\nline, with comma",completed,a@b.c,\r\n'
    "\r\n"
    "too,many,fields,here,x\r\n"
    '"quote ""inside""",archived,a@b.c,"was\nbad"\r\n'
    '5" stray,active,a@b.c,\r\n'
    "short\r\n"
)


@pytest.mark.parametrize("rows_per_chunk", [1, 2, 3, 5])
def test_chunks_concatenate_to_a_full_read_csv(tmp_path: Path, rows_per_chunk: int) -> None:
    data = MESSY_CSV.encode() + b"bad \xfe,active,a@b.c,\r\n" + b'"open,active,a@b.c,\r\n'
    path = write(tmp_path, data)
    full = read_all(path)
    assert len(full) == 8
    assert read_all(path, rows_per_chunk=rows_per_chunk) == full
    spans = plan_chunks(path, "csv", rows_per_chunk)
    assert [s.chunk_no for s in spans] == list(range(len(spans)))
    assert all(s.records == rows_per_chunk for s in spans[:-1])


@pytest.mark.parametrize("rows_per_chunk", [1, 2, 4])
def test_chunks_concatenate_to_a_full_read_jsonl(tmp_path: Path, rows_per_chunk: int) -> None:
    lines = ['{"a": "1"}', "", '{"a": "2"}', "[1]", "{", "", "", '{"a": "3"}', '{"a": "4"}']
    path = write(tmp_path, "\n".join(lines) + "\n", "in.jsonl")
    full = read_all(path, "jsonl")
    assert [r.line for r in full] == [1, 3, 4, 5, 8, 9]
    assert read_all(path, "jsonl", rows_per_chunk) == full


_field = st.text(alphabet=st.sampled_from("ab ,\"\r\n\t'é😀"), max_size=8)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(st.tuples(_field, _field, _field), max_size=12),
    eol=st.sampled_from(["\n", "\r\n", "\r"]),
    quote_all=st.booleans(),
    rows_per_chunk=st.integers(min_value=1, max_value=5),
)
def test_round_trip_matches_the_csv_module(
    tmp_path: Path,
    rows: list[tuple[str, str, str]],
    eol: str,
    quote_all: bool,
    rows_per_chunk: int,
) -> None:
    """Whatever csv.writer writes, the chunked reader reads back, with the right lines.

    Physical lines end at LF, CRLF or a lone CR, inside quoted fields too (as
    csv.reader's line_num and Python's universal newlines count them).
    """
    # With QUOTE_MINIMAL csv.writer may leave a line-end character that is not in
    # its lineterminator unquoted: that output is ambiguous (it reads back as a
    # line break), so it is not a fair input.
    text = "".join(sum(rows, ()))
    assume(quote_all or not any(c in text for c in "\r\n" if c not in eol))
    buf = io.StringIO(newline="")
    if quote_all:
        writer = csv.writer(buf, lineterminator=eol, quoting=csv.QUOTE_ALL)
    else:
        writer = csv.writer(buf, lineterminator=eol, quoting=csv.QUOTE_MINIMAL)
    writer.writerow(["title", "status", "owner_email"])
    starts = []
    for row in rows:
        starts.append(len(io.StringIO(buf.getvalue(), newline="").readlines()) + 1)
        writer.writerow(row)
    path = write(tmp_path, buf.getvalue())
    recs = read_all(path, rows_per_chunk=rows_per_chunk)
    assert [r.line for r in recs] == starts
    assert [r.values for r in recs] == [
        dict(zip(("title", "status", "owner_email"), row, strict=True)) for row in rows
    ]


def test_jsonl_round_trip(tmp_path: Path) -> None:
    objs = [{"title": t, "n": i} for i, t in enumerate(["a", 'q"uote', "new\nline", "😀", ""])]
    path = write(tmp_path, "".join(json.dumps(o) + "\n" for o in objs), "in.jsonl")
    assert [r.values for r in read_all(path, "jsonl", 2)] == [
        {"title": o["title"], "n": str(o["n"])} for o in objs
    ]


# --- the one-pass CSV fast path agrees with the per-record path ---------------------

TRICKY_CSV = (
    "\ufefftitle,_line,status,owner_email,_error\r\n"
    "plain,1,active,a@b.c,\r\n"
    "\r\n"
    '"multi\nline",2,active,a@b.c,"x\r\ny"\r\n'
    "\n"
    '"say ""hi""",3,"",A@B.C,""\n'
    '5" screen,4,archived,a@b.c,e\r\n'
    '"",5,active,a@b.c,\r\n'
    "too,few\r\n"
    "   ,6,completed,  a@b.c  ,\r\n"
    "\r\n"
    '"crlf\r\ninside\r\n",7,active,a@b.c,"end"'
)


def _fallback_only(monkeypatch: pytest.MonkeyPatch, path: Path, n: int) -> list[Record]:
    with monkeypatch.context() as m:
        m.setattr(parsing, "_fast_csv_chunk", lambda *args: None)
        return read_all(path, rows_per_chunk=n)


@pytest.mark.parametrize("rows_per_chunk", [1, 2, 3, 4, 7, 100])
@pytest.mark.parametrize("final_newline", ["", "\r\n", "\n"])
def test_csv_fast_path_matches_per_record_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows_per_chunk: int, final_newline: str
) -> None:
    path = write(tmp_path, TRICKY_CSV + final_newline)
    header = read_header(path, "csv")[0]
    spans = plan_chunks(path, "csv", rows_per_chunk)
    # the fast path really is taken for every chunk of this file
    assert all(parsing._fast_csv_chunk(path, span, header) is not None for span in spans)
    fast = read_all(path, rows_per_chunk=rows_per_chunk)
    assert fast == _fallback_only(monkeypatch, path, rows_per_chunk)
    assert fast == _fallback_only(monkeypatch, path, 10**9)
    assert [r.line for r in fast] == [2, 4, 8, 9, 10, 11, 12, 14]
    assert fast[1].values == {"title": "multi\nline", "status": "active", "owner_email": "a@b.c"}
    assert fast[1].raw == '"multi\nline",2,active,a@b.c,"x\r\ny"'
    assert fast[2].values == {"title": 'say "hi"', "status": "", "owner_email": "A@B.C"}
    assert fast[3].values == {"title": '5" screen', "status": "archived", "owner_email": "a@b.c"}
    assert fast[5] == Record(11, None, "too,few", "expected 5 fields, found 2")
    assert fast[7].values == {
        "title": "crlf\r\ninside\r\n",
        "status": "active",
        "owner_email": "a@b.c",
    }
    assert fast[7].raw == '"crlf\r\ninside\r\n",7,active,a@b.c,"end"'


@pytest.mark.parametrize("rows_per_chunk", [1, 2, 3, 100])
@pytest.mark.parametrize(
    "bad",
    [
        b"bad \xfe,0,active,a@b.c,\r\n",  # invalid UTF-8
        b"nul \x00,0,active,a@b.c,\r\n",  # NUL
        b"lone\rcr,0,active,a@b.c,\r\n",  # a CR outside a CRLF
        b'"after" quote,0,active,a@b.c,\r\n',  # text after a closing quote
        b'"open,0,active,a@b.c,\r\n',  # unterminated quoted field
    ],
)
def test_csv_chunks_that_need_the_per_record_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows_per_chunk: int, bad: bytes
) -> None:
    body = TRICKY_CSV.encode() + b"\r\n"
    head, _, rest = body.partition(b"\r\n")
    path = write(tmp_path, head + b"\r\n" + bad + rest + b"\r\n" + bad)
    got = read_all(path, rows_per_chunk=rows_per_chunk)
    assert got == _fallback_only(monkeypatch, path, rows_per_chunk)
    assert got == _fallback_only(monkeypatch, path, 10**9)
    assert got[0].values is None or "\x00" not in bad


def test_csv_fast_path_only_underscore_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "_a,_b\r\n1,2\r\n")
    assert read_all(path) == [Record(2, {}, "1,2")]


# --- lone-CR line ends (issue 8, defect 14) -----------------------------------------


@pytest.mark.parametrize("eol", ["\r", "\n", "\r\n"])
def test_csv_lone_cr_line_ends_read_as_lf_and_crlf(tmp_path: Path, eol: str) -> None:
    # Given the same file with each line end (lone CR as older spreadsheet exports write)
    rows = [HEADER.strip(), "A,active,a@b.c", '"two' + eol + 'lines",active,a@b.c', "B,done,a@b.c"]
    path = write(tmp_path, eol.join(rows) + eol)
    # When it is read, in one chunk or one record per chunk
    for n in (1, 10):
        recs = read_all(path, rows_per_chunk=n)
        # Then the records, their physical lines and raw text are the same for every line end
        assert [r.line for r in recs] == [2, 3, 5]
        assert recs[0].values == {"title": "A", "status": "active", "owner_email": "a@b.c"}
        assert recs[1].values is not None and recs[1].values["title"] == "two" + eol + "lines"
        assert recs[1].raw == '"two' + eol + 'lines",active,a@b.c'
        assert recs[2].values == {"title": "B", "status": "done", "owner_email": "a@b.c"}


def test_csv_mixed_line_ends_and_cr_in_quotes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = HEADER.replace("\n", "\r") + 'A,active,a@b.c\r\n"c\rr",active,a@b.c\nB,active,a@b.c\r'
    path = write(tmp_path, data)
    recs = read_all(path)
    assert [(r.line, r.values and r.values["title"]) for r in recs] == [
        (2, "A"),
        (3, "c\rr"),
        (5, "B"),
    ]
    assert recs == _fallback_only(monkeypatch, path, 1) == read_all(path, rows_per_chunk=1)
    header = read_header(path, "csv")[0]
    assert all(
        parsing._fast_csv_chunk(path, s, header) is not None for s in plan_chunks(path, "csv", 2)
    )


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 64])
def test_csv_line_ends_cut_by_the_readline_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, piece: int
) -> None:
    """A CRLF cut between two readline pieces is still one line end, not CR then LF."""
    data = HEADER.replace("\n", "\r\n") + "A,active,a@b.c\r\n\r\nB,x,y\rC,active,a@b.c\r\n"
    path = write(tmp_path, data)
    want = read_all(path)
    monkeypatch.setattr(scanner, "_PIECE_BYTES", piece)
    assert read_all(path) == want
    assert [r.line for r in want] == [2, 4, 5]


# --- JSON values that cannot be stored (issue 8, defect 2) --------------------------


def test_jsonl_lone_surrogate_is_one_reject_naming_the_column(tmp_path: Path) -> None:
    # Given valid JSON whose escapes decode to lone surrogates, among good lines
    lines = [
        '{"title": "ok", "status": "active"}',
        '{"title": "bad \\ud800 title", "status": "active"}',
        '{"title": "ok2", "owner_email": "\\udfff@x.y"}',
        '{"ti\\ud83dtle": "x"}',
        '{"title": "pair \\ud83d\\ude00 is fine"}',
    ]
    recs = read_all(write(tmp_path, "\n".join(lines) + "\n", "in.jsonl"), "jsonl")
    # Then each bad line is a reject with a storable reason, and the others are read
    assert recs[0].values == {"title": "ok", "status": "active"}
    assert (recs[1].error, recs[1].column) == (
        "column title: not valid Unicode (lone surrogate U+D800)",
        "title",
    )
    assert recs[2].error == "column owner_email: not valid Unicode (lone surrogate U+DFFF)"
    assert recs[3].error == "column 'ti\\ud83dtle': the column name is not valid Unicode " + (
        "(lone surrogate U+D83D)"
    )
    assert recs[3].column == "ti\ufffdtle"
    assert recs[4].values == {"title": "pair \U0001f600 is fine"}
    for r in recs:  # everything kept for a reject can be stored as UTF-8 text
        for text in (r.raw, r.error or "", r.column or ""):
            text.encode("utf-8")


def test_jsonl_numbers_are_kept_as_written_and_nan_is_a_reject(tmp_path: Path) -> None:
    lines = [
        '{"title": 1.50, "n": 1e999, "big": ' + "9" * 5000 + "}",
        '{"title": NaN}',
        '{"title": "x", "n": -Infinity}',
        "Infinity",
    ]
    recs = read_all(write(tmp_path, "\n".join(lines), "in.jsonl"), "jsonl")
    assert recs[0].values == {"title": "1.50", "n": "1e999", "big": "9" * 5000}
    assert (recs[1].error, recs[1].column) == (
        "column title: NaN is not a JSON value (JSON has no NaN/Infinity)",
        "title",
    )
    assert recs[2].error == "column n: -Infinity is not a JSON value (JSON has no NaN/Infinity)"
    assert recs[3].error == "expected a JSON object, got number"
    assert all(type(v) is str for v in recs[0].values.values())
