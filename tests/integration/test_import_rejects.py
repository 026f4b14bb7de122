"""The rejects round trip: import a messy file, export its rejects, fix them, import again.

The exported file (the original columns plus ``_line`` and ``_error``) is fixed
programmatically and imported as it is; afterwards every intended row is in
the table exactly once.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from import_support import Counts, counts, run, seed_users
from sqlalchemy import text

from worker import client, db
from worker.rejects_export import export_rejects

ANN = "ann@example.com"
BOB = "bob@example.com"
CAROL = "carol@example.com"
DAVE = "dave@example.com"
ERIN = "erin@example.com"

# title -> (status, owner, created_at or None for "not given")
Intended = dict[str, tuple[str, str, datetime | None]]


def table() -> dict[str, tuple[str, str, datetime]]:
    with db.session_scope() as s:
        rows = s.execute(
            text(
                "SELECT t.title, t.status, u.email, t.created_at FROM todos t "
                "JOIN users u ON u.id = t.owner_id"
            )
        ).all()
    found = {r[0]: (r[1], r[2], r[3]) for r in rows}
    assert len(found) == len(rows), "a title appears twice"
    return found


def assert_table_is(intended: Intended) -> None:
    got = table()
    assert sorted(got) == sorted(intended)
    for title, (status, owner, created) in intended.items():
        assert got[title][:2] == (status, owner), title
        if created is not None:
            assert got[title][2] == created, title


# --- CSV ---------------------------------------------------------------------------------

MESSY_CSV = (
    b"title,status,owner_email,created_at\n"
    b"Buy milk,active,ann@example.com,\n"  # 2 good
    b"Fix bike,done,ann@example.com,\n"  # 3 bad status
    b"Call mom,completed,carol@example.com,\n"  # 4 unknown owner
    b'"Two\nlines, ""quoted""",bogus,bob@example.com,2024-01-01T00:00:00Z\n'  # 5-6
    b"Extra field,active,ann@example.com,2024-02-02T00:00:00Z,oops\n"  # 7
    b"Too few,active\n"  # 8
    b"Caf\xe9,active,ann@example.com,\n"  # 9 invalid UTF-8
    b"Bad\x00nul,active,bob@example.com,\n"  # 10 NUL byte
    + b"L"
    * 201
    + b",active,ann@example.com,\n"  # 11 title too long
    b"Bad date,active,ann@example.com,31/12/2024\n"  # 12
    b'"  ",active,ann@example.com,\n'  # 13 empty title
    b"Buy milk,completed,ann@example.com,\n"  # 14 duplicate of line 2
    b'"CR\r\nLF",bogus,ann@example.com,\n'  # 15-16 CRLF inside quotes
    b'"Comma, ""quote"" and \\ back",active,dave@example.com,\n'  # 17 unknown owner
    b"Walk dog,in_progress,bob@example.com,\n"  # 18 good
)

CSV_INTENDED: Intended = {
    "Buy milk": ("active", ANN, None),
    "Fix bike": ("active", ANN, None),
    "Call mom": ("completed", CAROL, None),
    'Two\nlines, "quoted"': ("active", BOB, datetime(2024, 1, 1, tzinfo=UTC)),
    "Extra field": ("active", ANN, datetime(2024, 2, 2, tzinfo=UTC)),
    "Too few": ("active", ANN, None),
    "Café": ("active", ANN, None),
    "Bad-nul": ("active", BOB, None),
    "L" * 200: ("active", ANN, None),
    "Bad date": ("active", ANN, datetime(2024, 12, 31, tzinfo=UTC)),
    "Untitled": ("active", ANN, None),
    "CR\r\nLF": ("active", ANN, None),
    'Comma, "quote" and \\ back': ("active", DAVE, None),
    "Walk dog": ("in_progress", BOB, None),
}


def fix_csv_row(row: dict[str, str]) -> dict[str, str] | None:
    """What a user does with one exported row, reading its _error; None drops it."""
    error = row["_error"]
    if "duplicate of line" in error:
        return None  # the first one is in the table already
    if error.startswith("status:"):
        row["status"] = "active"
    elif "invalid UTF-8" in error:
        row["title"] = row["title"].replace("\ufffd", "é")
    elif "NUL byte" in error:
        row["title"] = row["title"].replace("\ufffd", "-")
    elif "found 5" in error:
        row["created_at"] = row["created_at"].split(",")[0]
    elif "found 2" in error:
        row["owner_email"] = ANN
    elif "characters, the limit is 200" in error:
        row["title"] = row["title"][:200]
    elif error.startswith("created_at:"):
        day, month, year = row["created_at"].split("/")
        row["created_at"] = f"{year}-{month}-{day}T00:00:00Z"
    elif "title is empty" in error:
        row["title"] = "Untitled"
    elif "unknown owner" in error:
        pass  # the owner is added to users instead
    else:
        raise AssertionError(f"unexpected reject: {row}")
    return row


def test_csv_rejects_round_trip(worker: Any, import_root: Path) -> None:
    seed_users(ANN, BOB)
    (import_root / "messy.csv").write_bytes(MESSY_CSV)
    first = run("messy.csv")
    assert counts(first) == Counts("partially_succeeded", read=15, inserted=2, rejected=13)
    assert sorted(table()) == ["Buy milk", "Walk dog"]

    out = import_root / "rejects" / "messy.rejects.csv"
    out.parent.mkdir()
    assert export_rejects(first.id, out) == 13
    with out.open(encoding="utf-8", newline="") as f:
        exported = list(csv.DictReader(f))
        f.seek(0)
        header = next(csv.reader(f))
    assert header == ["title", "status", "owner_email", "created_at", "_line", "_error"]
    assert [int(r["_line"]) for r in exported] == [3, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17]
    by_line = {int(r["_line"]): r for r in exported}
    assert by_line[3]["_error"].startswith("status: status 'done' is not one of")
    assert by_line[4]["_error"] == "owner_email: unknown owner 'carol@example.com'"
    assert by_line[14]["_error"] == "title: duplicate of line 2 in this file"
    # The original values come back exactly, whatever their quoting.
    assert by_line[5]["title"] == 'Two\nlines, "quoted"'
    assert by_line[15]["title"] == "CR\r\nLF"
    assert by_line[17]["title"] == 'Comma, "quote" and \\ back'
    assert by_line[7]["created_at"] == "2024-02-02T00:00:00Z,oops"  # extra text kept
    assert (by_line[8]["owner_email"], by_line[8]["created_at"]) == ("", "")

    fixed = [r for r in (fix_csv_row(dict(r)) for r in exported) if r is not None]
    assert len(fixed) == 12
    with (import_root / "rejects" / "fixed.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(fixed)
    (import_root / "owners.csv").write_text(f"email,name\n{CAROL},Carol\n{DAVE},Dave\n")
    assert counts(run("owners.csv", table="users")) == Counts("succeeded", read=2, inserted=2)

    second = run("rejects/fixed.csv")  # as it is: _line and _error are ignored
    assert counts(second) == Counts("succeeded", read=12, inserted=12)
    assert client.rejects(second.id) == []
    assert_table_is(CSV_INTENDED)

    # Importing the fixed file again changes nothing: every row is there exactly once.
    third = run("rejects/fixed.csv", mode="skip")
    assert counts(third) == Counts("succeeded", read=12, skipped=12)
    assert_table_is(CSV_INTENDED)


def test_csv_rejects_of_a_rejects_file(worker: Any, import_root: Path) -> None:
    """A fixed file that is still wrong: its own export replaces the old _line/_error."""
    seed_users(ANN)
    (import_root / "t.csv").write_text(
        "title,status,owner_email\nA,nope,ann@example.com\nB,active,ann@example.com\n"
    )
    first = run("t.csv")
    assert counts(first) == Counts("partially_succeeded", read=2, inserted=1, rejected=1)
    export_rejects(first.id, import_root / "r1.csv")
    text1 = (import_root / "r1.csv").read_text(encoding="utf-8")
    (import_root / "r1.csv").write_text(text1.replace(",nope,", ",still wrong,"))
    second = run("r1.csv")
    assert counts(second) == Counts("partially_succeeded", read=1, rejected=1)
    export_rejects(second.id, import_root / "r2.csv")
    with (import_root / "r2.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["title", "status", "owner_email", "_line", "_error"]
    assert rows[1][:4] == ["A", "still wrong", ANN, "2"]
    assert rows[1][4].startswith("status: status 'still wrong'")
    rows[1][1] = "completed"
    with (import_root / "r2.csv").open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    assert counts(run("r2.csv")) == Counts("succeeded", read=1, inserted=1)
    assert {k: v[:2] for k, v in table().items()} == {"A": ("completed", ANN), "B": ("active", ANN)}


# --- JSON Lines -------------------------------------------------------------------------------

MESSY_JSONL = (
    "\n".join(
        [
            '{"title": "A", "status": "active", "owner_email": "ann@example.com"}',  # 1 good
            '{"title": "B", "status": "done", "owner_email": "ann@example.com"}',  # 2 bad status
            '{"title": "C", "status": "active", "owner_email": "ann@example.com"',  # 3 truncated
            '["D", "completed", "ann@example.com"]',  # 4 not an object
            '{"title": {"text": "E"}, "status": "active", "owner_email": "ann@example.com"}',  # 5
            '{"title": null, "status": "active", "owner_email": "ann@example.com", "note": "F"}',
            '{"title": "G\\u0000", "status": "active", "owner_email": "ann@example.com"}',  # 7
            '{"title": "H\ttab", "status": "later", "owner_email": "ann@example.com"}',  # 8 raw tab
            '{"title": "I", "status": "active", "owner_email": "erin@example.com"}',  # 9 no owner
            '{"title": "A", "status": "completed", "owner_email": "ann@example.com"}',  # 10 dup
            '{"title": "J", "owner_email": "ann@example.com", '
            '"created_at": "2024-01-01T01:00:00+01:00"}',  # 11
            "",  # 12 blank
            '{"title": "K", "status": "in_progress", "owner_email": "ann@example.com", "_line": 5}',
        ]
    ).encode("utf-8")
    + b"\n"
)

JSONL_INTENDED: Intended = {
    "A": ("active", ANN, None),
    "B": ("active", ANN, None),
    "C": ("active", ANN, None),
    "D": ("completed", ANN, None),
    "E": ("active", ANN, None),
    "F": ("active", ANN, None),
    "G": ("active", ANN, None),
    "H\ttab": ("active", ANN, None),
    "I": ("active", ERIN, None),
    "J": ("active", ANN, datetime(2024, 1, 1, tzinfo=UTC)),
    "K": ("in_progress", ANN, None),
}


def fix_jsonl_object(obj: dict[str, Any]) -> dict[str, Any]:
    """What a user does with one exported object, reading its _error."""
    error = obj["_error"]
    if "malformed JSON" in error:
        obj.update(json.loads(obj.pop("_raw") + "}"))  # the line was cut short
    elif "expected a JSON object" in error:
        values = json.loads(obj.pop("_raw"))
        obj.update(dict(zip(("title", "status", "owner_email"), values, strict=True)))
    elif "expected a string" in error:
        obj["title"] = obj["title"]["text"]
    elif "title is missing" in error:
        obj["title"] = obj["note"]
    elif "NUL byte" in error:
        obj["title"] = obj["title"].replace("\x00", "")
    elif error.startswith("status:"):
        obj["status"] = "active"
    elif "unknown owner" in error or "duplicate of line" in error:
        pass  # the owner is added; the duplicate is skipped on re-import
    else:
        raise AssertionError(f"unexpected reject: {obj}")
    return obj


def test_jsonl_rejects_round_trip(worker: Any, import_root: Path) -> None:
    seed_users(ANN)
    (import_root / "messy.jsonl").write_bytes(MESSY_JSONL)
    first = run("messy.jsonl")
    assert counts(first) == Counts("partially_succeeded", read=12, inserted=3, rejected=9)
    assert sorted(table()) == ["A", "J", "K"]

    out = import_root / "messy.rejects.jsonl"
    assert export_rejects(first.id, out) == 9
    exported = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [o["_line"] for o in exported] == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    by_line = {o["_line"]: o for o in exported}
    # The original object comes back, with _line and _error added.
    assert by_line[2] == {
        "title": "B",
        "status": "done",
        "owner_email": ANN,
        "_line": 2,
        "_error": by_line[2]["_error"],
    }
    assert by_line[2]["_error"].startswith("status: status 'done' is not one of")
    assert by_line[3]["_raw"] == MESSY_JSONL.decode().splitlines()[2]  # unparseable: verbatim
    assert by_line[4]["_raw"] == '["D", "completed", "ann@example.com"]'
    assert by_line[5]["title"] == {"text": "E"}
    assert by_line[6]["note"] == "F" and by_line[6]["title"] is None
    assert by_line[7]["title"] == "G\x00"
    assert by_line[8]["title"] == "H\ttab" and by_line[8]["status"] == "later"
    assert by_line[9]["_error"] == "owner_email: unknown owner 'erin@example.com'"
    assert by_line[10]["_error"] == "title: duplicate of line 1 in this file"

    fixed = [fix_jsonl_object(o) for o in exported]
    (import_root / "fixed.jsonl").write_text(
        "".join(json.dumps(o, ensure_ascii=False) + "\n" for o in fixed), encoding="utf-8"
    )
    (import_root / "owners.jsonl").write_text(json.dumps({"email": ERIN, "name": "Erin"}) + "\n")
    assert counts(run("owners.jsonl", table="users")) == Counts("succeeded", read=1, inserted=1)

    # As it is, in skip mode: the duplicate of A is skipped, everything else goes in.
    second = run("fixed.jsonl", mode="skip")
    assert counts(second) == Counts("succeeded", read=9, inserted=8, skipped=1)
    assert_table_is(JSONL_INTENDED)
    again = run("fixed.jsonl", mode="skip")
    assert counts(again) == Counts("succeeded", read=9, skipped=9)
    assert_table_is(JSONL_INTENDED)


def test_users_rejects_round_trip(worker: Any, import_root: Path) -> None:
    seed_users("old@example.com")
    (import_root / "users.csv").write_text(
        "email,name\n"
        "ann@example.com,Ann\n"
        "Ann@Example.com,Ann twice\n"  # duplicate after normalisation
        f"bob@example.com,{'B' * 201}\n"
        "carol at example.com,Carol\n"
        "old@example.com,Old\n",  # exists
        encoding="utf-8",
    )
    first = run("users.csv", table="users")
    assert counts(first) == Counts("partially_succeeded", read=5, inserted=1, rejected=4)
    out = import_root / "users.rejects.csv"
    assert export_rejects(first.id, out) == 4
    with out.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["_line"], r["email"]) for r in rows] == [
        ("3", "Ann@Example.com"),
        ("4", "bob@example.com"),
        ("5", "carol at example.com"),
        ("6", "old@example.com"),
    ]
    for r in rows:
        if r["_error"].startswith("name:"):
            r["name"] = r["name"][:3]
        elif "not a valid email" in r["_error"]:
            r["email"] = r["email"].replace(" at ", "@")
    with out.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["email", "name", "_line", "_error"])
        writer.writeheader()
        writer.writerows(rows)
    # Upsert: the duplicate and the existing user take the fixed file's names.
    second = run("users.rejects.csv", table="users", mode="upsert")
    assert counts(second) == Counts("succeeded", read=4, inserted=2, updated=2)
    with db.session_scope() as s:
        got = s.execute(text("SELECT email, name FROM users ORDER BY email")).all()
    assert [(r[0], r[1]) for r in got] == [
        ("ann@example.com", "Ann twice"),
        ("bob@example.com", "BBB"),
        ("carol@example.com", "Carol"),
        ("old@example.com", "Old"),
    ]
