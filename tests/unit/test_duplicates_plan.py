"""The plan's fast key pass reads the same records, at the same byte ranges, as the scanner.

Chunks read their records with :mod:`worker.parsing`'s scanner; the plan cuts
the file and finds repeated keys with the csv module in large blocks. If the
two disagreed on where a record starts, a chunk's duplicate decisions would
point at the wrong lines. Blocks are made tiny here so that records (quoted
line breaks included) straddle block boundaries all the time.
"""

from __future__ import annotations

from itertools import chain
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker import duplicates, importer, parsing, targets
from worker.errors import InputFormatError

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PIECES = [
    "plain",
    "with, comma",
    '"quoted, comma"',
    '"two\nlines"',
    '"crlf\r\ninside"',
    '"say ""hi"""',
    '5" screen',
    "",
    " spaced ",
    "caf\u00e9",
    "ANN@Example.COM ",
    "ann@example.com",
]


def both(path: Path, fmt: str, table: str = "todos") -> tuple[list, list | None]:
    header, _ = parsing.read_header(path, fmt) if fmt == "csv" else ([], 0)
    key = importer._file_key(targets.get(table))
    scanned = list(chain.from_iterable(duplicates._scanned_records(path, fmt, header, key)))
    try:
        fast = list(chain.from_iterable(duplicates._fast_records(path, fmt, header, key)))
    except duplicates._Unusual:
        fast = None
    return scanned, fast


@FUZZ
@given(
    rows=st.lists(
        st.lists(st.sampled_from(PIECES), min_size=1, max_size=5), min_size=0, max_size=30
    ),
    ending=st.sampled_from(["\n", "\r\n"]),
    blank_every=st.integers(min_value=0, max_value=5),
    block=st.integers(min_value=1, max_value=64),
)
def test_fast_pass_agrees_with_the_scanner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows, ending, blank_every, block
) -> None:
    # Given a CSV of odd records, read in blocks of a few bytes
    monkeypatch.setattr(duplicates, "_BLOCK_BYTES", block)
    lines = ["title,owner_email,status"]
    for i, fields in enumerate(rows):
        if blank_every and i % blank_every == 0:
            lines.append("")
        lines.append(",".join(fields))
    path = tmp_path / "f.csv"
    path.write_bytes((ending.join(lines) + ending).encode("utf-8"))
    # When both readings run
    scanned, fast = both(path, "csv")
    # Then they agree record by record (lines, byte ranges, keys)
    assert fast is not None
    assert fast == scanned


def test_keys_are_normalised_as_the_validator_does(tmp_path: Path) -> None:
    # Given the same todo twice, its email written differently
    path = tmp_path / "f.csv"
    path.write_text(
        "title,status,owner_email\nA,active, Ann@Example.com\nA,active,ann@example.com\n"
    )
    scanned, fast = both(path, "csv")
    assert fast == scanned
    assert [key for *_, key in scanned] == [("A", "ann@example.com")] * 2
    validator = importer._validator(targets.get("todos"))
    row = validator.validate(
        parsing.read_chunk(
            path, "csv", parsing.plan_chunks(path, "csv", 10)[0], ["title", "status", "owner_email"]
        )
    )[0][0]
    assert validator.key(row.values) == ("A", "ann@example.com")


def test_jsonl_keys_and_ranges(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"title": "a", "owner_email": "X@y.z"}\n\n'
        b'{"title": 5, "owner_email": "x@y.z"}\nnot json\n{"title": "\\t", "owner_email": "q@r.s"}'
    )
    scanned, fast = both(path, "jsonl")
    assert fast == scanned
    # (free text is keyed as it is, even a blank title: its chunk rejects it, so it is only
    # a candidate; an invalid email, or a record that is no JSON object, gives no key)
    assert [key for *_, key in fast] == [("a", "x@y.z"), ("5", "x@y.z"), None, ("\t", "q@r.s")]


def test_text_after_a_closing_quote_takes_the_scanner(tmp_path: Path) -> None:
    # Given a record the csv module refuses (it could cut records otherwise)
    path = tmp_path / "f.csv"
    path.write_text('title,status,owner_email\n"a"b,active,x@y.z\nc,active,x@y.z\n')
    scanned, fast = both(path, "csv")
    # Then the fast pass gives up and the plan uses the scanner's reading
    assert fast is None
    assert [line for line, *_ in scanned] == [2, 3]


def test_header_only_and_empty_files(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("title,status,owner_email\n")
    assert both(path, "csv") == ([], [])
    path.write_text("")
    with pytest.raises(InputFormatError):
        both(path, "csv")
