"""Issue 8 parsing defects through a real worker: lone-CR CSV (14), unstorable JSON values (2).

Older spreadsheet exports end lines in a lone CR; they import as LF files do.
A ``"\\ud800"`` escape decodes to a lone surrogate, which PostgreSQL cannot hold
as UTF-8 text. Such a line must be one reject with a clear reason, and every
other line of its chunk must load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import text

from worker import client, db

ANN = "ann@example.com"


def _titles() -> list[str]:
    with db.session_scope() as s:
        return [r[0] for r in s.execute(text("SELECT title FROM todos ORDER BY title"))]


def test_lone_surrogates_are_one_reject_each_and_the_rest_loads(
    worker: Any, import_root: Path
) -> None:
    # Given owners, and a JSON Lines file (one chunk) whose lines 3, 5 and 7 hold
    # a lone surrogate in a title, an owner email and a key, among good lines
    with db.session_scope() as s:
        s.execute(text("INSERT INTO users (email, name) VALUES (:e, 'Ann')"), {"e": ANN})
    good = [
        f'{{"title": "good {i}", "status": "active", "owner_email": "{ANN}"}}' for i in range(5)
    ]
    lines = [
        good[0],
        good[1],
        f'{{"title": "bad \\ud800 title", "status": "active", "owner_email": "{ANN}"}}',
        good[2],
        '{"title": "bad email", "status": "active", "owner_email": "\\udc80@example.com"}',
        good[3],
        f'{{"title": "bad key", "status": "active", "owner_email": "{ANN}", "x\\udfff": "1"}}',
        good[4],
    ]
    (import_root / "s.jsonl").write_text("\n".join(lines) + "\n", encoding="ascii")
    # When it is imported through the worker
    s = client.wait(client.submit_import("s.jsonl"), timeout=120)
    # Then the three lines are rejects naming their column, and the five good lines load
    assert s.state == "partially_succeeded", s.error
    assert (s.rows_read, s.rows_inserted, s.rows_rejected) == (8, 5, 3)
    assert _titles() == [f"good {i}" for i in range(5)]
    rejects = [(r.line, r.column, r.reason) for r in client.rejects(s.id)]
    assert rejects == [
        (3, "title", "column title: not valid Unicode (lone surrogate U+D800)"),
        (5, "owner_email", "column owner_email: not valid Unicode (lone surrogate U+DC80)"),
        (
            7,
            "x\ufffd",
            "column 'x\\udfff': the column name is not valid Unicode (lone surrogate U+DFFF)",
        ),
    ]


def test_csv_with_lone_cr_line_ends_imports_like_lf(worker: Any, import_root: Path) -> None:
    # Given a CSV whose lines end in a lone CR, one with a CR inside a quoted title
    with db.session_scope() as s:
        s.execute(text("INSERT INTO users (email, name) VALUES (:e, 'Ann')"), {"e": ANN})
    rows = [
        "title,status,owner_email",
        f"A,active,{ANN}",
        f'"B\rtwo",active,{ANN}',
        f"C,nope,{ANN}",
    ]
    (import_root / "mac.csv").write_bytes("\r".join(rows).encode() + b"\r")
    # When it is imported
    s = client.wait(client.submit_import("mac.csv"), timeout=120)
    # Then it is read as its LF twin: two rows, one reject on its physical line
    assert (s.state, s.rows_read, s.rows_inserted, s.rows_rejected) == (
        "partially_succeeded",
        3,
        2,
        1,
    ), s.error
    assert _titles() == ["A", "B\rtwo"]
    assert [(r.line, r.column) for r in client.rejects(s.id)] == [(5, "status")]
