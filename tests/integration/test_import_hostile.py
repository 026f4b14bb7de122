"""Hostile import files through a real worker: exact counts, exact tables, exact rejects.

Every test submits through ``worker.client`` and waits for the real worker, then
checks the summary's counters, the table read back from PostgreSQL and each
reject's (line, column, reason fragment). In every one of them
``inserted + updated + skipped + rejected == read``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from import_support import Counts, counts, run, seed_users, todos, write
from sqlalchemy import text

from worker import client, db
from worker.models import STATUSES

ANN = "ann@example.com"
BOB = "bob@example.com"
HEADER = "title,status,owner_email\n"

Reject = tuple[int, str | None, str]  # (line, column, fragment of the reason)


# --- helpers -----------------------------------------------------------------------


def assert_rejects(job_id: int, expected: list[Reject]) -> None:
    got = client.rejects(job_id)
    assert [(r.line, r.column) for r in got] == [(line, col) for line, col, _ in expected], [
        (r.line, r.column, r.reason) for r in got
    ]
    for r, (_, _, fragment) in zip(got, expected, strict=True):
        assert fragment in r.reason, (r.line, r.reason, fragment)


def todo_times() -> dict[str, tuple[datetime, datetime]]:
    """title -> (created_at, updated_at)."""
    with db.session_scope() as s:
        return {
            r[0]: (r[1], r[2])
            for r in s.execute(text("SELECT title, created_at, updated_at FROM todos"))
        }


def users() -> list[tuple[str, str]]:
    with db.session_scope() as s:
        return [(r[0], r[1]) for r in s.execute(text("SELECT email, name FROM users ORDER BY 1"))]


# --- encodings and line structure -----------------------------------------------------


def test_utf8_bom(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    name = write(
        import_root,
        "bom.csv",
        b"\xef\xbb\xbftitle,status,owner_email\nCaf\xc3\xa9,active,ann@example.com\n"
        b"Second,completed,ann@example.com\nThird,nope,ann@example.com\n",
    )
    s = run(name)
    assert counts(s) == Counts("partially_succeeded", read=3, inserted=2, rejected=1)
    assert todos() == [("Café", "active", ANN), ("Second", "completed", ANN)]
    assert_rejects(s.id, [(4, "status", "status 'nope' is not one of")])


def test_crlf_line_endings(worker: Any, import_root: Path) -> None:
    seed_users(ANN, BOB)
    name = write(
        import_root,
        "crlf.csv",
        "title,status,owner_email\r\n"
        "One,active,ann@example.com\r\n"
        "Two,in_progress,bob@example.com\r\n"
        "Three,active,carol@example.com\r\n"
        "Four,archived,ann@example.com\r\n",
    )
    s = run(name)
    assert counts(s) == Counts("partially_succeeded", read=4, inserted=3, rejected=1)
    # No stray '\r' at the end of the last column, or in the stored values.
    assert todos() == [
        ("Four", "archived", ANN),
        ("One", "active", ANN),
        ("Two", "in_progress", BOB),
    ]
    assert_rejects(s.id, [(4, "owner_email", "unknown owner 'carol@example.com'")])
    assert client.rejects(s.id)[0].raw == "Three,active,carol@example.com"


def test_quoted_newlines_count_for_line_numbers(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    name = write(
        import_root,
        "multiline.csv",
        HEADER
        + "First,active,ann@example.com\n"  # line 2
        + '"Two\nline title",active,ann@example.com\n'  # lines 3-4
        + "Bad status,finished,ann@example.com\n"  # line 5
        + '"Three\nline\ntitle, with comma",completed,ann@example.com\n'  # lines 6-8
        + '"Quoted ""word""\nand bad owner",active,zed@example.com\n'  # lines 9-10
        + "Last,active,nobody\n",  # line 11
    )
    s = run(name)
    assert counts(s) == Counts("partially_succeeded", read=6, inserted=3, rejected=3)
    assert todos() == [
        ("First", "active", ANN),
        ("Three\nline\ntitle, with comma", "completed", ANN),
        ("Two\nline title", "active", ANN),
    ]
    assert_rejects(
        s.id,
        [
            (5, "status", "status 'finished'"),
            (9, "owner_email", "unknown owner 'zed@example.com'"),
            (11, "owner_email", "not a valid email address"),
        ],
    )
    assert client.rejects(s.id)[1].raw == '"Quoted ""word""\nand bad owner",active,zed@example.com'


def test_crlf_with_quoted_newlines(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    name = write(
        import_root,
        "crlf-multi.csv",
        "title,status,owner_email\r\n"
        '"Two\r\nlines",active,ann@example.com\r\n'  # lines 2-3
        "Bad,??,ann@example.com\r\n",  # line 4
    )
    s = run(name)
    assert counts(s) == Counts("partially_succeeded", read=2, inserted=1, rejected=1)
    # Inside quotes the file's bytes are the value (as the csv module reads it).
    assert todos() == [("Two\r\nlines", "active", ANN)]
    assert_rejects(s.id, [(4, "status", "status '??'")])


def test_nul_byte_in_a_row(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    name = write(
        import_root,
        "nul.csv",
        HEADER + "Good,active,ann@example.com\nBad\x00title,active,ann@example.com\n"
        "Also good,active,ann@example.com\nx,active,ann\x00@example.com\n",
    )
    s = run(name)
    assert counts(s) == Counts("partially_succeeded", read=4, inserted=2, rejected=2)
    assert todos() == [("Also good", "active", ANN), ("Good", "active", ANN)]
    assert_rejects(s.id, [(3, "title", "NUL byte"), (5, "owner_email", "NUL byte")])
    # The rejected text survives in the ledger (PostgreSQL text cannot hold NUL).
    raws = [r.raw for r in client.rejects(s.id)]
    assert (
        raws[0] is not None
        and raws[0].startswith("Bad")
        and raws[0].endswith("title,active,ann@example.com")
    )


def test_nul_byte_in_an_ignored_column_of_a_rejected_row(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    name = write(
        import_root,
        "nul-note.csv",
        "title,status,owner_email,_note\nA,active,ann@example.com,ok\n"
        "B,bogus,ann@example.com,has\x00nul\n",
    )
    s = run(name)
    assert counts(s) == Counts("partially_succeeded", read=2, inserted=1, rejected=1)
    assert todos() == [("A", "active", ANN)]
    assert_rejects(s.id, [(3, "status", "status 'bogus'")])


def test_nul_byte_in_the_header_fails_cleanly(worker: Any, import_root: Path) -> None:
    name = write(
        import_root, "nul-header.csv", "title,status,owner_email,x\x00y\nA,active,a@b.c,1\n"
    )
    s = run(name)
    assert counts(s) == Counts("failed")
    assert s.error == "nul-header.csv: the header contains a NUL byte"


def test_jsonl_hostile_keys(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    long_key = "k" * 300
    lines = [
        {"title": "A", "status": "active", "owner_email": ANN},
        {"ti\x00tle": [1], "title": "B", "status": "active", "owner_email": ANN},
        {long_key: {"x": 1}, "title": "C", "status": "active", "owner_email": ANN},
        {"title": "D\x00", "status": "active", "owner_email": ANN, "_n\x00te": "x"},
    ]
    name = write(import_root, "keys.jsonl", "".join(json.dumps(r) + "\n" for r in lines))
    s = run(name)
    assert counts(s) == Counts("partially_succeeded", read=4, inserted=1, rejected=3)
    assert todos() == [("A", "active", ANN)]
    assert_rejects(
        s.id,
        [
            (2, "ti\ufffdtle", "column ti\ufffdtle: expected a string, got array"),
            (3, "k" * 200, f"column {long_key}: expected a string, got object"),
            (4, "title", "NUL byte in column title"),
        ],
    )


def test_invalid_utf8_in_one_row(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    name = write(
        import_root,
        "latin1.csv",
        HEADER.encode()
        + b"Before,active,ann@example.com\n"
        + b"Caf\xe9 latin-1,active,ann@example.com\n"
        + b"After \xe2\x9c\x93,completed,ann@example.com\n",
    )
    s = run(name)
    assert counts(s) == Counts("partially_succeeded", read=3, inserted=2, rejected=1)
    assert todos() == [("After ✓", "completed", ANN), ("Before", "active", ANN)]
    assert_rejects(s.id, [(3, "title", "invalid UTF-8")])
    assert client.rejects(s.id)[0].raw == "Caf\ufffd latin-1,active,ann@example.com"


def test_wrong_field_counts(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    name = write(
        import_root,
        "fields.csv",
        HEADER
        + "Ok,active,ann@example.com\n"
        + "Too many,active,ann@example.com,extra\n"
        + "Too few,active\n"
        + "Lonely\n"
        + "Ok too,,ann@example.com\n",  # an empty status is the default, 'active'
    )
    s = run(name)
    assert counts(s) == Counts("partially_succeeded", read=5, inserted=2, rejected=3)
    assert todos() == [("Ok", "active", ANN), ("Ok too", "active", ANN)]
    assert_rejects(
        s.id,
        [
            (3, None, "expected 3 fields, found 4"),
            (4, None, "expected 3 fields, found 2"),
            (5, None, "expected 3 fields, found 1"),
        ],
    )


def test_ten_megabyte_field(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    huge = "x" * (10 * 1024 * 1024)
    name = write(
        import_root,
        "huge.csv",
        HEADER
        + "Small,active,ann@example.com\n"
        + f'"{huge}",active,ann@example.com\n'
        + "After,active,ann@example.com\n",
    )
    s = run(name)
    assert counts(s) == Counts("partially_succeeded", read=3, inserted=2, rejected=1)
    assert todos() == [("After", "active", ANN), ("Small", "active", ANN)]
    assert_rejects(s.id, [(3, "title", f"title is {len(huge)} characters, the limit is 200")])
    # The worker survived: the next job runs normally.
    write(import_root, "next.csv", HEADER + "Next,active,ann@example.com\n")
    assert counts(run("next.csv")) == Counts("succeeded", read=1, inserted=1)


HOSTILE_TITLES = [
    "Robert'); DROP TABLE todos;--",
    "'; DELETE FROM users WHERE ''='",
    '" OR 1=1 --',
    "back\\slash \\N \\. \\\\ end\\",
    "tab\there\tand\tthere",
    "percent %s %(x)s {0} $1 :name",
    "semi;colon,comma",
    "\\.",
    "E'\\x41' $$dollar$$ /* c */",
    "  leading and trailing spaces  ",
    "carriage\rreturn",
]


def test_sql_metacharacters_stored_literally(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    lines = [HEADER]
    for title in HOSTILE_TITLES:
        quoted = '"' + title.replace('"', '""') + '"'
        lines.append(f"{quoted},active,ann@example.com\n")
    name = write(import_root, "sql.csv", "".join(lines))
    s = run(name)
    assert counts(s) == Counts("succeeded", read=len(HOSTILE_TITLES), inserted=len(HOSTILE_TITLES))
    assert sorted(t for t, _, _ in todos()) == sorted(HOSTILE_TITLES)
    assert users() == [(ANN, ANN)]  # nothing was executed as SQL
    with db.session_scope() as sess:
        for title in HOSTILE_TITLES:  # each reads back byte for byte, as a bound value
            found = sess.execute(
                text("SELECT count(*) FROM todos WHERE title = :t"), {"t": title}
            ).scalar()
            assert found == 1, title


def test_sql_metacharacters_jsonl(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    rows = [{"title": t, "status": "active", "owner_email": ANN} for t in HOSTILE_TITLES]
    name = write(import_root, "sql.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    s = run(name)
    assert counts(s) == Counts("succeeded", read=len(rows), inserted=len(rows))
    assert sorted(t for t, _, _ in todos()) == sorted(HOSTILE_TITLES)


def test_emoji_titles_200_loads_201_rejected(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    ok, too_long = "😀" * 200, "🎉" * 201
    mixed = "a" + "é" * 98 + "漢" * 100 + "𝄞"  # 200 characters, 1-4 bytes each
    name = write(
        import_root,
        "emoji.csv",
        HEADER + f"{ok},active,{ANN}\n{too_long},active,{ANN}\n{mixed},active,{ANN}\n",
    )
    s = run(name)
    assert counts(s) == Counts("partially_succeeded", read=3, inserted=2, rejected=1)
    assert sorted(t for t, _, _ in todos()) == sorted([ok, mixed])
    with db.session_scope() as sess:
        assert sess.execute(text("SELECT max(length(title)) FROM todos")).scalar() == 200
    assert_rejects(s.id, [(3, "title", "title is 201 characters, the limit is 200")])


# --- headers -------------------------------------------------------------------------


def test_empty_file_fails_naming_the_file(worker: Any, import_root: Path) -> None:
    name = write(import_root, "empty.csv", b"")
    s = run(name)
    assert counts(s) == Counts("failed")
    assert s.error is not None and "empty.csv" in s.error and "empty" in s.error
    assert todos() == []


def test_bom_only_file_is_empty(worker: Any, import_root: Path) -> None:
    name = write(import_root, "bom-only.csv", b"\xef\xbb\xbf")
    s = run(name)
    assert counts(s) == Counts("failed")
    assert s.error is not None and "bom-only.csv" in s.error


def test_header_only_file_succeeds_with_zero_rows(worker: Any, import_root: Path) -> None:
    for name, data in [
        ("header.csv", HEADER),
        ("header-noeol.csv", HEADER.rstrip("\n")),
        ("header-crlf-blank.csv", "\ufefftitle,status,owner_email\r\n\r\n\r\n"),
    ]:
        s = run(write(import_root, name, data))
        assert counts(s) == Counts("succeeded"), name
        assert s.error is None
    assert todos() == []


def test_empty_jsonl_file_succeeds_with_zero_rows(worker: Any, import_root: Path) -> None:
    # JSON Lines has no header: an empty file is simply no records.
    s = run(write(import_root, "empty.jsonl", "\n\n"))
    assert counts(s) == Counts("succeeded")


def test_missing_required_column_fails_and_loads_nothing(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    name = write(import_root, "missing.csv", "title,status\nA,active\nB,active\n")
    s = run(name)
    assert counts(s) == Counts("failed")
    assert s.error is not None and "missing required column(s): owner_email" in s.error
    assert todos() == []
    assert client.rejects(s.id) == []


def test_duplicate_columns_fail(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    name = write(
        import_root,
        "dupcols.csv",
        "title,status,owner_email,status\nA,active,ann@example.com,completed\n",
    )
    s = run(name)
    assert counts(s) == Counts("failed")
    assert s.error is not None
    assert "dupcols.csv" in s.error and "duplicate column name(s) in the header: status" in s.error
    assert todos() == []


def test_unknown_column_fails(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    name = write(import_root, "unknown.csv", "title,status,owner_email,priority\nA,active,x,1\n")
    s = run(name)
    assert counts(s) == Counts("failed")
    assert s.error is not None and "unknown column(s): priority" in s.error
    assert todos() == []


# --- values ------------------------------------------------------------------------------


def test_unknown_owners(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    name = write(
        import_root,
        "owners.csv",
        HEADER
        + "A,active,ann@example.com\n"
        + "B,active,ghost@example.com\n"
        + "C,active,  ANN@Example.COM \n"  # normalised: Ann's
        + "D,active,ghost@example.com\n"
        + "E,active,\n",
    )
    s = run(name)
    assert counts(s) == Counts("partially_succeeded", read=5, inserted=2, rejected=3)
    assert todos() == [("A", "active", ANN), ("C", "active", ANN)]
    assert_rejects(
        s.id,
        [
            (3, "owner_email", "unknown owner 'ghost@example.com'"),
            (5, "owner_email", "unknown owner 'ghost@example.com'"),
            (6, "owner_email", "owner_email is empty"),
        ],
    )


def test_bad_status(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    name = write(
        import_root,
        "status.csv",
        HEADER
        + "A,ACTIVE,ann@example.com\n"  # case-insensitive, stored lower case
        + "B,done,ann@example.com\n"
        + "C, In_Progress ,ann@example.com\n"
        + "D,active; DROP TABLE todos,ann@example.com\n"
        + "E,Completed,ann@example.com\n",
    )
    s = run(name)
    assert counts(s) == Counts("partially_succeeded", read=5, inserted=3, rejected=2)
    assert todos() == [("A", "active", ANN), ("C", "in_progress", ANN), ("E", "completed", ANN)]
    allowed = ", ".join(STATUSES)
    assert_rejects(
        s.id,
        [
            (3, "status", f"status 'done' is not one of {allowed}"),
            (5, "status", "status 'active; DROP TABLE todos' is not one of"),
        ],
    )


def test_bad_created_at(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    name = write(
        import_root,
        "dates.csv",
        "title,status,owner_email,created_at\n"
        "A,active,ann@example.com,2024-01-02T03:04:05Z\n"
        "B,active,ann@example.com,yesterday\n"
        "C,active,ann@example.com,2024-13-01T00:00:00Z\n"
        "D,active,ann@example.com,2024-02-30\n"
        "E,active,ann@example.com,\n",
    )
    before = datetime.now(UTC)
    s = run(name)
    assert counts(s) == Counts("partially_succeeded", read=5, inserted=2, rejected=3)
    assert todos() == [("A", "active", ANN), ("E", "active", ANN)]
    times = todo_times()
    assert times["A"][0] == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    # An empty created_at is "now", as the table's default would be.
    assert before - timedelta(seconds=5) <= times["E"][0] <= datetime.now(UTC)
    assert_rejects(
        s.id,
        [
            (3, "created_at", "created_at 'yesterday' is not an ISO 8601 timestamp"),
            (4, "created_at", "'2024-13-01T00:00:00Z' is not an ISO 8601"),
            (5, "created_at", "'2024-02-30' is not an ISO 8601"),
        ],
    )


def test_created_at_with_timezone_stored_as_utc(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    name = write(
        import_root,
        "tz.csv",
        "title,status,owner_email,created_at\n"
        "plus2,active,ann@example.com,2024-03-01T12:00:00+02:00\n"
        "minus0530,active,ann@example.com,2024-03-01T12:00:00-05:30\n"
        "zulu,active,ann@example.com,2024-03-01T12:00:00Z\n"
        "naive,active,ann@example.com,2024-03-01 12:00:00\n"
        "micro,active,ann@example.com,2024-12-31T23:59:59.123456+14:00\n",
    )
    s = run(name)
    assert counts(s) == Counts("succeeded", read=5, inserted=5)
    times = {title: created for title, (created, _) in todo_times().items()}
    assert times == {
        "plus2": datetime(2024, 3, 1, 10, 0, tzinfo=UTC),
        "minus0530": datetime(2024, 3, 1, 17, 30, tzinfo=UTC),
        "zulu": datetime(2024, 3, 1, 12, 0, tzinfo=UTC),
        "naive": datetime(2024, 3, 1, 12, 0, tzinfo=UTC),  # naive means UTC
        "micro": datetime(2024, 12, 31, 9, 59, 59, 123456, tzinfo=UTC),
    }
    # Independently of the session's time zone: the stored instant, printed in UTC.
    with db.session_scope() as sess:
        sess.execute(text("SET TIME ZONE 'America/New_York'"))
        shown = sess.execute(
            text(
                "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') "
                "FROM todos WHERE title = 'plus2'"
            )
        ).scalar()
    assert shown == "2024-03-01 10:00:00"


# --- duplicates ------------------------------------------------------------------------


def test_duplicates_inside_the_file(worker: Any, import_root: Path) -> None:
    seed_users(ANN, BOB)
    name = write(
        import_root,
        "dups.csv",
        HEADER
        + "Same,active,ann@example.com\n"  # 2
        + "Same,active,bob@example.com\n"  # 3: another owner, not a duplicate
        + "Same,completed,ANN@example.com\n"  # 4: duplicate of 2 (owner normalised)
        + "same,active,ann@example.com\n"  # 5: titles are case-sensitive
        + "Same,active,ann@example.com\n"  # 6: duplicate of 2
        + "Same ,active,ann@example.com\n",  # 7: titles are kept exactly
    )
    s = run(name)
    assert counts(s) == Counts("partially_succeeded", read=6, inserted=4, rejected=2)
    assert todos() == [
        ("Same", "active", ANN),
        ("Same", "active", BOB),
        ("Same ", "active", ANN),
        ("same", "active", ANN),
    ]
    assert_rejects(
        s.id,
        [(4, "title", "duplicate of line 2 in this file"), (6, "title", "duplicate of line 2")],
    )


def test_duplicates_across_chunks(worker: Any, import_root: Path) -> None:
    """1,500 rows (chunks of 1,000): one key in both chunks, one in chunk 2 twice."""
    seed_users(ANN)
    rows = [f"T{i:04d},active,{ANN}\n" for i in range(1500)]
    rows[1200] = f"T0100,active,{ANN}\n"  # same row as line 102, in the other chunk
    rows[1300] = f"T1250,active,{ANN}\n"  # same chunk as line 1252: Python catches it
    name = write(import_root, "across.csv", HEADER + "".join(rows))
    s = run(name)
    assert s.chunks_total == 2
    assert counts(s) == Counts("partially_succeeded", read=1500, inserted=1498, rejected=2)
    expected = {f"T{i:04d}" for i in range(1500)} - {"T1200", "T1300"}
    got = todos()
    assert len(got) == 1498 and {t for t, _, _ in got} == expected
    rejects = client.rejects(s.id)
    assert len(rejects) == 2
    # The chunks run concurrently, yet the result is one sequential pass's:
    # the later line is the duplicate, whichever chunk commits first.
    assert (rejects[0].line, rejects[0].column) == (1202, "title")
    assert rejects[0].reason == "duplicate of line 102 in this file"
    assert (rejects[1].line, rejects[1].column) == (1302, "title")
    assert rejects[1].reason == "duplicate of line 1252 in this file"


def _existing_and_file(import_root: Path) -> tuple[str, dict[str, tuple[datetime, datetime]]]:
    """Load A, B, C; then a file: A changed, B identical, C identical but no created_at, D new."""
    seed_users(ANN)
    write(
        import_root,
        "first.csv",
        "title,status,owner_email,created_at\n"
        "A,active,ann@example.com,2024-01-01T00:00:00Z\n"
        "B,active,ann@example.com,2024-01-01T00:00:00Z\n"
        "C,completed,ann@example.com,2024-01-01T00:00:00Z\n",
    )
    assert counts(run("first.csv")) == Counts("succeeded", read=3, inserted=3)
    before = todo_times()
    name = write(
        import_root,
        "again.csv",
        "title,status,owner_email,created_at\n"
        "A,in_progress,ann@example.com,2024-01-01T00:00:00Z\n"  # 2: status differs
        "B,active,ann@example.com,2024-01-01T00:00:00Z\n"  # 3: identical
        "C,completed,ann@example.com,\n"  # 4: no created_at: keeps the stored one
        "D,active,ann@example.com,2024-05-05T05:05:05Z\n"  # 5: new
        "E,bogus,ann@example.com,\n",  # 6: invalid whatever the mode
    )
    return name, before


def test_existing_rows_insert_mode_rejects(worker: Any, import_root: Path) -> None:
    name, before = _existing_and_file(import_root)
    s = run(name, mode="insert")
    assert counts(s) == Counts("partially_succeeded", read=5, inserted=1, rejected=4)
    assert todos() == [
        ("A", "active", ANN),
        ("B", "active", ANN),
        ("C", "completed", ANN),
        ("D", "active", ANN),
    ]
    assert_rejects(
        s.id,
        [
            (2, "title", "already exists"),
            (3, "title", "already exists"),
            (4, "title", "already exists"),
            (6, "status", "status 'bogus'"),
        ],
    )
    after = todo_times()
    assert {k: after[k] for k in "ABC"} == before


def test_existing_rows_skip_mode_skips(worker: Any, import_root: Path) -> None:
    name, before = _existing_and_file(import_root)
    s = run(name, mode="skip")
    assert counts(s) == Counts("partially_succeeded", read=5, inserted=1, skipped=3, rejected=1)
    assert todos() == [
        ("A", "active", ANN),  # not changed: skipped
        ("B", "active", ANN),
        ("C", "completed", ANN),
        ("D", "active", ANN),
    ]
    assert_rejects(s.id, [(6, "status", "status 'bogus'")])
    after = todo_times()
    assert {k: after[k] for k in "ABC"} == before
    assert after["D"][0] == datetime(2024, 5, 5, 5, 5, 5, tzinfo=UTC)


def test_existing_rows_upsert_mode(worker: Any, import_root: Path) -> None:
    name, before = _existing_and_file(import_root)
    s = run(name, mode="upsert")
    # A updated; B identical and C identical (no created_at = keep) are skipped.
    assert counts(s) == Counts(
        "partially_succeeded", read=5, inserted=1, updated=1, skipped=2, rejected=1
    )
    assert todos() == [
        ("A", "in_progress", ANN),
        ("B", "active", ANN),
        ("C", "completed", ANN),
        ("D", "active", ANN),
    ]
    assert_rejects(s.id, [(6, "status", "status 'bogus'")])
    after = todo_times()
    assert after["B"] == before["B"]  # identical: not rewritten, updated_at unchanged
    assert after["C"] == before["C"]
    assert after["A"][0] == before["A"][0]
    assert after["A"][1] > before["A"][1]  # really updated: updated_at moved
    # Upserting the same file again changes nothing at all.
    s2 = run(name, mode="upsert")
    assert counts(s2) == Counts("partially_succeeded", read=5, skipped=4, rejected=1)
    assert todo_times() == after


def test_upsert_changes_created_at_when_given(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    header = "title,status,owner_email,created_at\n"
    write(import_root, "a.csv", header + "A,active,ann@example.com,2024-01-01T00:00:00Z\n")
    assert counts(run("a.csv")) == Counts("succeeded", read=1, inserted=1)
    write(import_root, "b.csv", header + "A,active,ann@example.com,2024-01-01T01:00:00+01:00\n")
    # same instant
    assert counts(run("b.csv", mode="upsert")) == Counts("succeeded", read=1, skipped=1)
    write(import_root, "c.csv", header + "A,active,ann@example.com,2023-06-01T00:00:00Z\n")
    assert counts(run("c.csv", mode="upsert")) == Counts("succeeded", read=1, updated=1)
    assert todo_times()["A"][0] == datetime(2023, 6, 1, tzinfo=UTC)


# --- dry run -------------------------------------------------------------------------------


def test_dry_run_same_summary_table_unchanged(worker: Any, import_root: Path) -> None:
    seed_users(ANN, BOB)
    write(import_root, "pre.csv", HEADER + f"Existing,active,{ANN}\nOther,active,{BOB}\n")
    assert counts(run("pre.csv")) == Counts("succeeded", read=2, inserted=2)
    table_before, times_before = todos(), todo_times()
    rows = [f"R{i:04d},active,{ANN if i % 2 else BOB}\n" for i in range(2500)]
    rows[10] = "Existing,completed,ann@example.com\n"  # conflict with the table
    rows[1500] = "R1499,active,ann@example.com\n"  # duplicate in the same chunk
    rows[2001] = "Bad,nope,ann@example.com\n"
    rows[2002] = "Ghost,active,ghost@example.com\n"
    name = write(import_root, "dry.csv", HEADER + "".join(rows))
    for mode in ("insert", "skip", "upsert"):
        dry = run(name, mode=mode, dry_run=True)
        assert todos() == table_before and todo_times() == times_before, mode
        assert client.rejects(dry.id) and dry.chunks_total == 3
        if mode == "upsert":  # last: the real run, then compare
            real = run(name, mode=mode)
            assert counts(dry) == counts(real)
            real_rejects = [(r.line, r.column, r.reason) for r in client.rejects(real.id)]
            assert [(r.line, r.column, r.reason) for r in client.rejects(dry.id)] == real_rejects
        expected = {
            "insert": Counts("partially_succeeded", read=2500, inserted=2496, rejected=4),
            "skip": Counts("partially_succeeded", read=2500, inserted=2496, skipped=1, rejected=3),
            # upsert: the last line of a key wins, the earlier copy is skipped
            "upsert": Counts(
                "partially_succeeded", read=2500, inserted=2496, updated=1, skipped=1, rejected=2
            ),
        }[mode]
        assert counts(dry) == expected, mode
    assert len(todos()) == 2 + 2496
    assert ("Existing", "completed", ANN) in todos()


def test_dry_run_matches_real_run_insert(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    write(import_root, "pre.csv", HEADER + f"Existing,active,{ANN}\n")
    run("pre.csv")
    name = write(
        import_root,
        "t.csv",
        HEADER + f"Existing,active,{ANN}\nNew,active,{ANN}\nNew,active,{ANN}\n,active,{ANN}\n",
    )
    dry = run(name, dry_run=True)
    assert todos() == [("Existing", "active", ANN)]
    real = run(name)
    assert (
        counts(dry) == counts(real) == Counts("partially_succeeded", read=4, inserted=1, rejected=3)
    )
    expected: list[Reject] = [
        (2, "title", "already exists"),
        (4, "title", "duplicate of line 3"),
        (5, "title", "title is empty"),
    ]
    assert_rejects(dry.id, expected)
    assert_rejects(real.id, expected)
    assert todos() == [("Existing", "active", ANN), ("New", "active", ANN)]


# --- JSON Lines ------------------------------------------------------------------------------


def test_jsonl_hostile_lines(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    lines = [
        '{"title": "A", "status": "active", "owner_email": "ann@example.com"}',  # 1
        '{"title": "B", "status": "active", "owner_email": "ann@exa',  # 2 malformed
        '["not", "an", "object"]',  # 3
        '{"title": {"nested": 1}, "owner_email": "ann@example.com"}',  # 4
        '{"title": "C", "status": null, "owner_email": "ann@example.com", "created_at": null}',
        '{"title": null, "status": "active", "owner_email": "ann@example.com"}',  # 6
        "",  # 7: blank, not a record
        '"just a string"',  # 8
        '{"title": "D", "status": "done", "owner_email": "ann@example.com"}',  # 9
        '{"title": "E", "status": true, "owner_email": "ann@example.com"}',  # 10
        '{"title": 42, "status": "completed", "owner_email": "ann@example.com"}',  # 11
        '{"title": "F", "owner_email": "ann@example.com", "_line": 3, "_error": "x"}',  # 12
        '{"title": "Nul\\u0000", "owner_email": "ann@example.com"}',  # 13
        "   ",  # 14: blank
        '{"title": "G", "owner_email": "ann@example.com", "status": ["active"]}',  # 15
        "{}",  # 16
        '{"title": "H\\ttab \\"q\\" \\\\ back", "owner_email": "ann@example.com"}',  # 17
    ]
    name = write(import_root, "mixed.jsonl", "\n".join(lines) + "\n")
    s = run(name)
    assert counts(s) == Counts("partially_succeeded", read=15, inserted=5, rejected=10)
    assert todos() == [
        ("42", "completed", ANN),
        ("A", "active", ANN),
        ("C", "active", ANN),
        ("F", "active", ANN),
        ('H\ttab "q" \\ back', "active", ANN),
    ]
    assert_rejects(
        s.id,
        [
            (2, None, "malformed JSON"),
            (3, None, "expected a JSON object, got array"),
            (4, "title", "column title: expected a string, got object"),
            (6, "title", "title is missing"),
            (8, None, "expected a JSON object, got string"),
            (9, "status", "status 'done'"),
            (10, "status", "status 'True' is not one of"),
            (13, "title", "NUL byte"),
            (15, "status", "column status: expected a string, got array"),
            (16, "title", "title is missing"),
        ],
    )
    assert client.rejects(s.id)[0].raw == lines[1]


def test_jsonl_with_crlf_bom_and_invalid_utf8(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    data = (
        b"\xef\xbb\xbf"
        + b'{"title": "A", "status": "active", "owner_email": "ann@example.com"}\r\n'
        + b'{"title": "B\xff", "status": "active", "owner_email": "ann@example.com"}\r\n'
        + b'{"title": "C\x00", "status": "active", "owner_email": "ann@example.com"}\r\n'
        + b'{"title": "D", "status": "active", "owner_email": "ann@example.com"}\r\n'
    )
    s = run(write(import_root, "crlf.jsonl", data))
    assert counts(s) == Counts("partially_succeeded", read=4, inserted=2, rejected=2)
    assert todos() == [("A", "active", ANN), ("D", "active", ANN)]
    assert_rejects(s.id, [(2, None, "invalid UTF-8"), (3, "title", "NUL byte")])


# --- users -----------------------------------------------------------------------------------


def test_users_import(worker: Any, import_root: Path) -> None:
    seed_users("existing@example.com")
    long_name = "n" * 201
    name = write(
        import_root,
        "users.csv",
        "email,name\n"
        "  Ann@Example.COM ,Ann Smith\n"  # 2: normalised
        "ann@example.com,Ann Again\n"  # 3: duplicate of 2 after normalisation
        "bob@example.com,  Bob  \n"  # 4: the name is kept exactly
        f"carol@example.com,{long_name}\n"  # 5: name too long
        "not-an-email,Nobody\n"  # 6
        "dave@example.com,\n"  # 7: empty name
        "EXISTING@example.com,Existing\n"  # 8: already in the table
        "erin@example.com,Érin 😀\n",  # 9
    )
    s = run(name, table="users")
    assert counts(s) == Counts("partially_succeeded", read=8, inserted=3, rejected=5)
    assert users() == [
        ("ann@example.com", "Ann Smith"),
        ("bob@example.com", "  Bob  "),
        ("erin@example.com", "Érin 😀"),
        ("existing@example.com", "existing@example.com"),
    ]
    assert_rejects(
        s.id,
        [
            (3, "email", "duplicate of line 2 in this file"),
            (5, "name", "name is 201 characters, the limit is 200"),
            (6, "email", "not a valid email address"),
            (7, "name", "name is empty"),
            (8, "email", "already exists: a user with this email"),
        ],
    )


def test_users_upsert_and_skip(worker: Any, import_root: Path) -> None:
    seed_users("a@example.com", "b@example.com")
    name = write(
        import_root,
        "users.csv",
        "email,name\nA@example.com,New name\nb@example.com,b@example.com\nc@example.com,C\n",
    )
    s = run(name, table="users", mode="skip")
    assert counts(s) == Counts("succeeded", read=3, inserted=1, skipped=2)
    assert users() == [
        ("a@example.com", "a@example.com"),
        ("b@example.com", "b@example.com"),
        ("c@example.com", "C"),
    ]
    s = run(name, table="users", mode="upsert")
    assert counts(s) == Counts("succeeded", read=3, updated=1, skipped=2)
    assert users() == [
        ("a@example.com", "New name"),
        ("b@example.com", "b@example.com"),
        ("c@example.com", "C"),
    ]


def test_users_jsonl(worker: Any, import_root: Path) -> None:
    lines = [
        {"email": "X@Example.com", "name": "X"},
        {"email": "x@example.com", "name": "X2"},
        {"email": "y@example.com", "name": None},
        {"email": "z@example.com", "name": "Z", "_line": 9},
    ]
    name = write(import_root, "u.jsonl", "".join(json.dumps(r) + "\n" for r in lines))
    s = run(name, table="users")
    assert counts(s) == Counts("partially_succeeded", read=4, inserted=2, rejected=2)
    assert users() == [("x@example.com", "X"), ("z@example.com", "Z")]
    assert_rejects(s.id, [(2, "email", "duplicate of line 1"), (3, "name", "name is missing")])


# --- error limits ------------------------------------------------------------------------------


def test_max_errors_stops_the_job_and_keeps_what_committed(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    rows = [f"Good {i},active,{ANN}\n" for i in range(20)]
    for i in (3, 7, 11, 15, 19):
        rows[i] = f"Bad {i},nope,{ANN}\n"
    name = write(import_root, "five-bad.csv", HEADER + "".join(rows))
    s = run(name, max_errors=2)
    assert counts(s) == Counts("failed", read=20, inserted=15, rejected=5)
    assert s.error is not None and "--max-errors 2" in s.error and "5 rows rejected" in s.error
    assert len(todos()) == 15  # the chunk committed before the limit was seen: it stays
    assert [r.line for r in client.rejects(s.id)] == [5, 9, 13, 17, 21]
    # At the limit is not past it.
    s = run(name, max_errors=5, mode="skip")
    assert counts(s) == Counts("partially_succeeded", read=20, skipped=15, rejected=5)
    assert s.error is None


def test_max_errors_across_chunks(worker: Any, import_root: Path) -> None:
    """Bad rows in the first chunk; later chunks stop or, if already running, are counted."""
    seed_users(ANN)
    rows = [f"Good {i:05d},active,{ANN}\n" for i in range(5000)]
    for i in (1, 2, 3, 4, 5):
        rows[i] = f"Bad {i},nope,{ANN}\n"
    name = write(import_root, "five-chunks.csv", HEADER + "".join(rows))
    s = run(name, max_errors=2)
    assert s.state == "failed"
    assert s.error is not None and "--max-errors 2" in s.error
    # A chunk's rows and its counters commit together: in any one snapshot the
    # table holds exactly what the job counted, even while another chunk commits.
    for _ in range(5):
        with db.session_scope() as sess:
            sess.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            job = sess.execute(
                text(
                    "SELECT state, rows_read, rows_inserted, rows_rejected FROM "
                    "bulkops_ledger.jobs WHERE id = :id"
                ),
                {"id": s.id},
            ).one()
            table = sess.execute(text("SELECT count(*) FROM todos")).scalar()
        assert job.state == "failed" and job.rows_rejected == 5
        assert job.rows_read % 1000 == 0 and 1000 <= job.rows_read <= 5000
        assert table == job.rows_inserted == job.rows_read - 5
        time.sleep(0.2)


def test_max_error_rate(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    rows = [f"Row {i},active,{ANN}\n" for i in range(10)]
    rows[2] = f"Bad 2,nope,{ANN}\n"
    rows[5] = f"Bad 5,{ANN}\n"
    name = write(import_root, "rate.csv", HEADER + "".join(rows))
    s = run(name, max_error_rate=0.1)
    assert counts(s) == Counts("failed", read=10, inserted=8, rejected=2)
    assert s.error is not None and "--max-error-rate 0.1" in s.error and "2 of 10" in s.error
    assert len(todos()) == 8
    s = run(name, max_error_rate=0.2, mode="skip")  # 20% is not more than 20%
    assert counts(s) == Counts("partially_succeeded", read=10, skipped=8, rejected=2)
    assert s.error is None


# --- errors validation did not foresee ----------------------------------------------------

FORBIDDEN = [
    0,
    1,
    2,
    100,
    101,
    250,
    400,
    401,
    402,
    403,
    500,
    620,
    700,
    777,
    800,
    850,
    900,
    997,
    998,
    999,
]


@pytest.mark.parametrize("existing", [False, True], ids=["fresh-table", "with-existing-rows"])
def test_unforeseen_check_constraint_rejects_only_the_bad_rows(
    worker: Any, import_root: Path, existing: bool
) -> None:
    """A constraint validation knows nothing of: COPY names each bad line, the rest loads.

    20 bad rows in one 1,000-row chunk (first, last, runs of adjacent ones), on the
    direct COPY path (fresh table) and on the staging path (some keys exist).
    """
    seed_users(ANN)
    if existing:
        write(import_root, "pre.csv", HEADER + f"R0003,active,{ANN}\nR0555,active,{ANN}\n")
        assert counts(run("pre.csv")) == Counts("succeeded", read=2, inserted=2)
    with db.session_scope() as sess:
        sess.execute(
            text("ALTER TABLE todos ADD CONSTRAINT no_forbidden CHECK (title NOT LIKE 'forbid%')")
        )
    rows = [f"R{i:04d},active,{ANN}\n" for i in range(1000)]
    for i in FORBIDDEN:
        rows[i] = f"forbidden {i},active,{ANN}\n"
    rows[300] = f"R0300,nope,{ANN}\n"  # and one that validation does catch
    name = write(import_root, "unforeseen.csv", HEADER + "".join(rows))
    s = run(name, mode="skip")
    skipped = 2 if existing else 0
    assert counts(s) == Counts(
        "partially_succeeded", read=1000, inserted=979 - skipped, skipped=skipped, rejected=21
    )
    expected = {f"R{i:04d}" for i in range(1000)} - {f"R{i:04d}" for i in [*FORBIDDEN, 300]}
    assert {t for t, _, _ in todos()} == expected
    check = 'database: new row for relation "todos" violates check constraint "no_forbidden"'
    assert_rejects(
        s.id,
        sorted([(i + 2, None, check) for i in FORBIDDEN] + [(302, "status", "status 'nope'")]),
    )
    assert client.rejects(s.id)[0].raw == f"forbidden 0,active,{ANN}"


def test_unforeseen_error_without_a_line_is_bisected(worker: Any, import_root: Path) -> None:
    """An error raised at the end of the statement names no line: bisection finds the rows."""
    seed_users(ANN)
    with db.session_scope() as sess:
        sess.execute(
            text(
                "CREATE FUNCTION refuse_late() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN IF NEW.title LIKE 'late%' THEN "
                "RAISE EXCEPTION 'late refusal of %', NEW.title USING ERRCODE = '23514'; "
                "END IF; RETURN NULL; END $$"
            )
        )
        sess.execute(
            text(
                "CREATE CONSTRAINT TRIGGER refuse_late AFTER INSERT ON todos "
                "FOR EACH ROW EXECUTE FUNCTION refuse_late()"
            )
        )
    rows = [f"R{i:04d},active,{ANN}\n" for i in range(1000)]
    rows[123] = f"late 123,active,{ANN}\n"
    rows[877] = f"late 877,active,{ANN}\n"
    name = write(import_root, "late.csv", HEADER + "".join(rows))
    s = run(name)
    assert counts(s) == Counts("partially_succeeded", read=1000, inserted=998, rejected=2)
    assert len(todos()) == 998 and not any(t.startswith("late") for t, _, _ in todos())
    assert_rejects(
        s.id,
        [
            (125, None, "database: late refusal of late 123"),
            (879, None, "database: late refusal of late 877"),
        ],
    )


# --- a large file ------------------------------------------------------------------------------


@dataclass
class Generated:
    data: bytes
    good: list[tuple[str, str, str]]  # (title, status, email) that must be in the table
    rejects: list[Reject]  # deterministic rejects
    either: list[tuple[int, int]]  # cross-chunk duplicate pairs: exactly one line rejected
    rows: int


def generate_large(rows: int = 5000) -> Generated:
    """5,000 rows, 50 bad of ten kinds, one every 100 rows; some good titles span lines."""
    owners = [f"user{k}@example.com" for k in range(7)]
    out = [b"title,status,owner_email,created_at\n"]
    good: list[tuple[str, str, str]] = []
    rejects: list[Reject] = []
    either: list[tuple[int, int]] = []
    line_of: dict[int, int] = {}
    values: dict[int, tuple[str, str, str]] = {}
    line = 2
    for i in range(rows):
        line_of[i] = line
        owner = owners[i % 7]
        status = STATUSES[i % 4]
        title = f"task {i:05d}"
        if i % 250 == 5:
            title = f"task {i:05d}\nsecond line"
        record: bytes | None = None
        if i % 100 == 37:
            kind = (i // 100) % 10
            if kind == 0:
                record = f"bad {i},later,{owner},\n".encode()
                rejects.append((line, "status", "status 'later'"))
            elif kind == 1:
                record = f"bad {i},active,ghost{i}@example.com,\n".encode()
                rejects.append((line, "owner_email", f"unknown owner 'ghost{i}@example.com'"))
            elif kind == 2:
                record = f'"  ",active,{owner},\n'.encode()
                rejects.append((line, "title", "title is empty"))
            elif kind == 3:
                record = f"{'é' * 201},active,{owner},\n".encode()
                rejects.append((line, "title", "title is 201 characters"))
            elif kind == 4:
                record = f"bad {i},active,{owner},31/12/2024\n".encode()
                rejects.append((line, "created_at", "'31/12/2024' is not an ISO 8601"))
            elif kind == 5:
                record = f"bad {i},active,{owner},,extra\n".encode()
                rejects.append((line, None, "expected 4 fields, found 5"))
            elif kind == 6:
                record = f"bad\x00{i},active,{owner},\n".encode()
                rejects.append((line, "title", "NUL byte"))
            elif kind == 7:
                record = b"bad \xff\xfe " + f"{i},active,{owner},\n".encode()
                rejects.append((line, "title", "invalid UTF-8"))
            elif kind == 8:  # the previous row again, same chunk: caught in Python
                prev = values[i - 1]
                record = _csv_row(*prev)
                rejects.append((line, "title", f"duplicate of line {line_of[i - 1]} in this file"))
            else:  # a row of the previous chunk again: caught by the unique key
                if i < 1000:
                    record = f"bad {i},active,{owner},not a date\n".encode()
                    rejects.append((line, "created_at", "is not an ISO 8601"))
                else:
                    prev = values[i - 1001]
                    record = _csv_row(*prev)
                    either.append((line_of[i - 1001], line))
        if record is None:
            values[i] = (title, status, owner)
            good.append(values[i])
            record = _csv_row(title, status, owner)
        out.append(record)
        line += record.count(b"\n")
    return Generated(b"".join(out), sorted(good), rejects, either, rows)


def _csv_row(title: str, status: str, owner: str) -> bytes:
    quoted = f'"{title}"' if "\n" in title else title
    return f"{quoted},{status},{owner},\n".encode()


def test_large_file_exact_across_chunks(worker: Any, import_root: Path) -> None:
    gen = generate_large()
    assert len(gen.rejects) + len(gen.either) == 50 and len(gen.either) == 4
    seed_users(*(f"user{k}@example.com" for k in range(7)))
    name = write(import_root, "large.csv", gen.data)
    s = run(name)
    assert s.chunks_total == 5
    assert counts(s) == Counts("partially_succeeded", read=5000, inserted=4950, rejected=50)
    assert todos() == sorted(gen.good)
    rejects = client.rejects(s.id)
    by_line = {r.line: r for r in rejects}
    assert len(by_line) == len(rejects) == 50
    either_lines = set()
    for first, second in gen.either:
        # Across chunks too, the later line is the duplicate (one sequential pass).
        assert first not in by_line and second in by_line, (first, second)
        r = by_line[second]
        assert r.column == "title" and r.reason == f"duplicate of line {first} in this file"
        either_lines.add(second)
    assert_rejects_subset = [
        (r.line, r.column, r.reason) for r in rejects if r.line not in either_lines
    ]
    assert [(ln, col) for ln, col, _ in assert_rejects_subset] == [
        (ln, col) for ln, col, _ in gen.rejects
    ]
    for (ln, _, reason), (_, _, fragment) in zip(assert_rejects_subset, gen.rejects, strict=True):
        assert fragment in reason, (ln, reason, fragment)
    # Each chunk's own counters add up too, and every chunk committed once.
    with db.session_scope() as sess:
        chunks = sess.execute(
            text(
                "SELECT chunk_no, rows_read, rows_inserted + rows_updated + rows_skipped "
                "+ rows_rejected FROM bulkops_ledger.job_chunks "
                "WHERE job_id = :id ORDER BY chunk_no"
            ),
            {"id": s.id},
        ).all()
    assert [(c[0], c[1], c[2]) for c in chunks] == [(n, 1000, 1000) for n in range(5)]
