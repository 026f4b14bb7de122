"""Imports through a real worker: the happy path, conflicts, modes, dry run, rejects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from import_support import seed_users, todos

from worker import client


def test_csv_import_with_bad_rows(worker: Any, import_root: Path) -> None:
    seed_users("ann@example.com", "bob@example.com")
    (import_root / "todos.csv").write_text(
        "title,status,owner_email\n"
        "Buy milk,active,ann@example.com\n"
        "Fix bike,done,ann@example.com\n"
        ",active,bob@example.com\n"
        "Call mom,completed,nobody@example.com\n"
        "Buy milk,active,ann@example.com\n"
        "Walk dog,in_progress,BOB@example.com\n",
        encoding="utf-8",
    )
    s = client.wait(client.submit_import("todos.csv"), timeout=60)
    assert s.state == "partially_succeeded", s.error
    assert (s.rows_read, s.rows_inserted, s.rows_rejected) == (6, 2, 4)
    assert todos() == [
        ("Buy milk", "active", "ann@example.com"),
        ("Walk dog", "in_progress", "bob@example.com"),
    ]
    lines = [(r.line, r.column) for r in client.rejects(s.id)]
    assert lines == [(3, "status"), (4, "title"), (5, "owner_email"), (6, "title")]


def test_reimport_modes(worker: Any, import_root: Path) -> None:
    seed_users("ann@example.com")
    path = import_root / "t.csv"
    path.write_text(
        "title,status,owner_email\nA,active,ann@example.com\nB,active,ann@example.com\n"
    )
    assert client.wait(client.submit_import("t.csv"), timeout=60).rows_inserted == 2
    path.write_text(
        "title,status,owner_email\nA,completed,ann@example.com\nB,active,ann@example.com\n"
        "C,active,ann@example.com\n"
    )
    ins = client.wait(client.submit_import("t.csv", mode="insert"), timeout=60)
    assert (ins.rows_inserted, ins.rows_rejected) == (1, 2)
    skip = client.wait(client.submit_import("t.csv", mode="skip"), timeout=60)
    assert (skip.rows_inserted, skip.rows_skipped, skip.rows_rejected) == (0, 3, 0)
    up = client.wait(client.submit_import("t.csv", mode="upsert"), timeout=60)
    assert (up.rows_inserted, up.rows_updated, up.rows_skipped) == (0, 1, 2)
    assert todos() == [
        ("A", "completed", "ann@example.com"),
        ("B", "active", "ann@example.com"),
        ("C", "active", "ann@example.com"),
    ]


def test_dry_run_commits_nothing(worker: Any, import_root: Path) -> None:
    seed_users("ann@example.com")
    (import_root / "t.csv").write_text(
        "title,status,owner_email\nA,active,ann@example.com\nB,bogus,ann@example.com\n"
    )
    s = client.wait(client.submit_import("t.csv", dry_run=True), timeout=60)
    assert (s.rows_read, s.rows_inserted, s.rows_rejected) == (2, 1, 1)
    assert todos() == []
