"""Property-based fuzzing of the parser and validator (fixed example budget in CI).

Arbitrary bytes and arbitrary row values never crash a chunk, and every
record ends in exactly one place: a valid row or a reject with its line.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker import parsing, target_rows, targets
from worker.errors import InputFormatError

HEADER = b"title,status,owner_email,created_at\n"
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples every run: CI stays reproducible
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _read_all(path: Path, fmt: str, rows_per_chunk: int) -> list[parsing.Record]:
    try:
        header, _ = parsing.read_header(path, fmt)
    except InputFormatError:
        return []  # a file that cannot be imported at all fails the job with a message
    records: list[parsing.Record] = []
    for span in parsing.plan_chunks(path, fmt, rows_per_chunk):
        records.extend(parsing.read_chunk(path, fmt, span, header))
    return records


def _accounted(records: list[parsing.Record]) -> None:
    # the validator imports use (derived from the todos target)
    rows, errors = target_rows.RowValidator(targets.get("todos")).validate(records)
    assert len(rows) + len(errors) == len(records)
    lines = sorted([r.line for r in rows] + [e.line for e in errors])
    assert lines == sorted(r.line for r in records)
    assert all(e.reason for e in errors)


@FUZZ
@given(body=st.binary(max_size=2_000), chunk=st.integers(min_value=1, max_value=7))
def test_arbitrary_bytes_after_a_csv_header_never_crash(
    tmp_path_factory: object, body: bytes, chunk: int
) -> None:
    path = Path(str(tmp_path_factory.mktemp("fuzz"))) / "f.csv"  # type: ignore[attr-defined]
    path.write_bytes(HEADER + body)
    records = _read_all(path, "csv", chunk)
    _accounted(records)
    # Chunking never changes what is read
    assert [(r.line, r.values, r.error) for r in records] == [
        (r.line, r.values, r.error) for r in _read_all(path, "csv", 10_000)
    ]


@FUZZ
@given(body=st.binary(max_size=2_000))
def test_arbitrary_bytes_as_json_lines_never_crash(tmp_path_factory: object, body: bytes) -> None:
    path = Path(str(tmp_path_factory.mktemp("fuzz"))) / "f.jsonl"  # type: ignore[attr-defined]
    path.write_bytes(body)
    _accounted(_read_all(path, "jsonl", 3))


cell = st.text(max_size=250)  # any unicode, including NUL, quotes, newlines, emoji


@FUZZ
@given(rows=st.lists(st.tuples(cell, cell, cell, cell), max_size=25))
def test_arbitrary_row_values_are_each_accounted_for(
    tmp_path_factory: object, rows: list[tuple[str, str, str, str]]
) -> None:
    folder = Path(str(tmp_path_factory.mktemp("fuzz")))  # type: ignore[attr-defined]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["title", "status", "owner_email", "created_at"])
    writer.writerows(rows)
    (folder / "v.csv").write_text(buf.getvalue(), encoding="utf-8", errors="surrogatepass")
    records = _read_all(folder / "v.csv", "csv", 4)
    _accounted(records)
    (folder / "v.jsonl").write_text(
        "".join(
            json.dumps(dict(zip(("title", "status", "owner_email", "created_at"), r, strict=True)))
            + "\n"
            for r in rows
        )
    )
    jsonl = _read_all(folder / "v.jsonl", "jsonl", 4)
    assert len(jsonl) == len(rows)
    _accounted(jsonl)


_LINEY = st.text(alphabet=st.sampled_from('ab,"\r\n é'), max_size=300)


@FUZZ
@given(body=_LINEY, chunk=st.integers(min_value=1, max_value=5))
def test_fast_path_and_per_record_path_agree_on_any_line_ends(
    tmp_path_factory: object, body: str, chunk: int
) -> None:
    """LF, CRLF and lone CR, mixed and inside quotes: both readers give the same records."""
    path = Path(str(tmp_path_factory.mktemp("fuzz"))) / "f.csv"  # type: ignore[attr-defined]
    path.write_bytes(b"a,b\r" + body.encode())
    fast = _read_all(path, "csv", chunk)
    real_fast = parsing._fast_csv_chunk
    try:
        parsing._fast_csv_chunk = lambda *args: None  # type: ignore[assignment]
        slow = _read_all(path, "csv", chunk)
    finally:
        parsing._fast_csv_chunk = real_fast
    assert fast == slow
    assert [r.line for r in fast] == sorted({r.line for r in fast})
