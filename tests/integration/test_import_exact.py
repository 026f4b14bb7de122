"""Exact imports whatever the database refuses, and whatever order chunks commit in.

Each test here failed on the loader before it found refused rows by trial:
good rows were rejected as "not loaded: too many rows in this chunk failed",
a lone surrogate failed the whole job, and which copy of a duplicate loaded
depended on which chunk committed first.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from import_support import Counts, counts, queued_import, run, seed_users, todos, write
from sqlalchemy import text

from worker import client, db, loader, targets

ANN = "ann@example.com"
BOB = "bob@example.com"
TODOS = targets.Registry(targets.builtin_targets()).get("todos").to_table_spec()
HEADER = "title,status,owner_email\n"


def execute(sql: str) -> None:
    with db.session_scope() as s:
        s.execute(text(sql))


def file_with(bad_every: int, bad_title: str, rows: int) -> tuple[str, set[int]]:
    """A CSV of ``rows`` todos where every ``bad_every``-th title contains ``bad_title``."""
    lines, bad = [], set()
    for i in range(rows):
        if i % bad_every == 7:
            title = f"{bad_title} {i}"
            bad.add(i + 2)  # the header is line 1
        else:
            title = f"task {i}, with a comma"
        lines.append(f'"{title}",active,{ANN if i % 2 else BOB}\n')
    return HEADER + "".join(lines), bad


def test_rows_only_a_check_constraint_refuses(worker: Any, import_root: Path) -> None:
    # Given a CHECK constraint the validation knows nothing of, broken by 5% of 20,000 rows
    seed_users(ANN, BOB)
    execute("ALTER TABLE todos ADD CONSTRAINT no_forbidden CHECK (title NOT LIKE '%forbidden%')")
    data, bad = file_with(20, "forbidden", 20_000)
    # When the file is imported (20 chunks, concurrently)
    s = run(write(import_root, "check.csv", data), timeout=300)
    # Then every good row loads, and each refused row is a reject with the database's words
    assert counts(s) == Counts("partially_succeeded", read=20_000, inserted=19_000, rejected=1_000)
    rejects = client.rejects(s.id)
    assert {r.line for r in rejects} == bad
    assert all('violates check constraint "no_forbidden"' in r.reason for r in rejects)
    assert len(todos()) == 19_000


def test_rows_a_trigger_refuses(worker: Any, import_root: Path) -> None:
    # Given a trigger that raises for 5% of the rows (nothing set-based can foresee it)
    seed_users(ANN, BOB)
    execute(
        "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.title LIKE 'boom%' THEN RAISE EXCEPTION 'no boom please: %', NEW.title; "
        "END IF; RETURN NEW; END $$"
    )
    execute(
        "CREATE TRIGGER refuse_boom BEFORE INSERT ON todos "
        "FOR EACH ROW EXECUTE FUNCTION refuse_boom()"
    )
    data, bad = file_with(20, "boom", 4_000)
    # When imported
    s = run(write(import_root, "trigger.csv", data), timeout=300)
    # Then only the refused rows are rejects, each with the trigger's own message
    assert counts(s) == Counts("partially_succeeded", read=4_000, inserted=3_800, rejected=200)
    rejects = client.rejects(s.id)
    assert {r.line for r in rejects} == bad
    for r in rejects:
        assert "no boom please: boom" in r.reason, r


def test_rows_an_exclusion_constraint_refuses_together(worker: Any, import_root: Path) -> None:
    # Given an exclusion constraint: a title may belong to one owner only. Each
    # row passes alone; the second of a pair (same chunk) is refused.
    seed_users(ANN, BOB)
    execute(
        "ALTER TABLE todos ADD CONSTRAINT one_owner_per_title EXCLUDE USING btree (title WITH =)"
    )
    lines, bad = [], set()
    for i in range(900):
        lines.append(f"t{i},active,{ANN}\n")
        if i % 30 == 0:
            lines.append(f"t{i},active,{BOB}\n")
            bad.add(len(lines) + 1)
    # When imported
    s = run(write(import_root, "exclusion.csv", HEADER + "".join(lines)))
    # Then the first of each pair loads and the second is refused by the database
    assert counts(s) == Counts("partially_succeeded", read=930, inserted=900, rejected=30)
    rejects = client.rejects(s.id)
    assert {r.line for r in rejects} == bad
    assert all("one_owner_per_title" in r.reason for r in rejects)


def test_owner_deleted_after_the_lookup_is_one_reject(bulkops_env: dict[str, str]) -> None:
    # Given owner ids looked up a moment ago, one of which has been deleted since
    seed_users(ANN)
    with db.session_scope() as s:
        ann = int(s.execute(text("SELECT id FROM users")).scalar_one())
        gone = ann + 1000
        records = [
            (line, (f"t{line}", "active", gone if line % 20 == 3 else ann, None))
            for line in range(2, 402)
        ]
        raw = {line: f"row {line}" for line, _ in records}
        # When the rows are loaded
        outcome = loader.load(s, TODOS, records, raw, "insert", dry_run=False)
    # Then each orphan is a reject with the foreign key's name and the rest loaded
    assert outcome.inserted == 380
    assert [r.line for r in outcome.rejects] == [line for line in range(2, 402) if line % 20 == 3]
    for r in outcome.rejects:
        assert 'foreign key constraint "todos_owner_id_fkey"' in r.reason
        assert r.raw == f"row {r.line}"


@pytest.mark.parametrize("route", ["stage", "split"])
def test_upsert_of_a_key_committed_meanwhile_applies_the_new_values(
    bulkops_env: dict[str, str], route: str
) -> None:
    # Given a key that another transaction inserts, uncommitted, while an upsert runs
    seed_users(ANN)
    with db.session_scope() as s:
        ann = int(s.execute(text("SELECT id FROM users")).scalar_one())
    other = db.get_engine().connect()
    other.execute(
        text("INSERT INTO todos (title, status, owner_id) VALUES ('k', 'active', :o)"), {"o": ann}
    )
    result: dict[str, loader.LoadOutcome] = {}

    def upsert() -> None:
        loader._route["todos"] = route  # as after a chunk that met existing or refused rows
        with db.session_scope() as s:
            records = [(2, ("k", "completed", ann, None)), (3, ("new", "active", ann, None))]
            result["outcome"] = loader.load(s, TODOS, records, {}, "upsert", False)

    thread = threading.Thread(target=upsert)
    thread.start()
    thread.join(timeout=2)  # the upsert waits on the other transaction's key
    # When the other transaction commits
    other.commit()
    other.close()
    thread.join(timeout=60)
    # Then the upsert updated the row it met, never counted it skipped
    outcome = result["outcome"]
    assert (outcome.inserted, outcome.updated, outcome.skipped) == (1, 1, 0)
    assert ("k", "completed", ANN) in todos()


def test_a_lone_surrogate_is_one_reject(worker: Any, import_root: Path) -> None:
    # Given JSON Lines where one title, one status and one email hold a lone surrogate
    seed_users(ANN)
    good = [json.dumps({"title": f"ok {i}", "owner_email": ANN}) for i in range(30)]
    bad_lines = [
        '{"title": "bad \\ud800", "owner_email": "ann@example.com"}',
        '{"title": "bad status", "status": "\\udfff", "owner_email": "ann@example.com"}',
        '{"title": "bad email", "owner_email": "\\ud800@example.com"}',
    ]
    body = "\n".join(good[:10] + bad_lines + good[10:]) + "\n"
    # When imported
    s = run(write(import_root, "surrogate.jsonl", body), format="jsonl")
    # Then each such line is one reject and the rest of its chunk loads
    assert counts(s) == Counts("partially_succeeded", read=33, inserted=30, rejected=3)
    assert sorted(r.line for r in client.rejects(s.id)) == [11, 12, 13]


def test_duplicates_across_chunks_as_one_sequential_pass(worker: Any, import_root: Path) -> None:
    # Given keys repeated in other chunks (chunks of 1,000 rows), one of whose
    # first copies is invalid (so it is nobody's original)
    seed_users(ANN)
    lines = [f"T{i:04d},active,{ANN}\n" for i in range(3000)]
    lines[2500] = f"T0005,completed,{ANN}\n"  # line 2502 repeats line 7
    lines[1700] = f"T0010,in_progress,{ANN}\n"  # line 1702 repeats line 12
    lines[2900] = f"T0010,archived,{ANN}\n"  # line 2902 repeats it again
    lines[20] = f"T2990,nope,{ANN}\n"  # line 22: invalid status, same key as line 2992
    name = write(import_root, "seq.csv", HEADER + "".join(lines))
    # When imported in insert mode
    s = run(name)
    # Then the later copies are the rejects, naming the first valid line
    rejects = {r.line: r.reason for r in client.rejects(s.id)}
    assert rejects == {
        22: rejects[22],
        1702: "duplicate of line 12 in this file",
        2502: "duplicate of line 7 in this file",
        2902: "duplicate of line 12 in this file",
    }
    assert "status" in rejects[22]
    assert ("T2990", "active", ANN) in todos()
    # And in upsert mode (a fresh table) the last valid line of each key wins
    execute("DELETE FROM todos")
    u = run(name, mode="upsert")
    assert counts(u) == Counts(
        "partially_succeeded", read=3000, inserted=2996, skipped=3, rejected=1
    )
    table = {t: st for t, st, _ in todos()}
    assert table["T0005"] == "completed" and table["T0010"] == "archived"


@pytest.mark.parametrize(("mode", "interrupted"), [("insert", False), ("skip", True)])
def test_the_first_chunks_load_while_the_plan_reads_on(
    bulkops_env: dict[str, str], import_root: Path, mode: str, interrupted: bool
) -> None:
    from worker import ledger, runner
    from worker.duplicates import EARLY_CHUNKS
    from worker.errors import BrokerUnavailable
    from worker.importer import IMPORT

    # Given 8 chunks of 1,000 rows with keys repeated inside a chunk, across the early
    # chunks, from an early chunk into a late one, and a first copy that is invalid
    seed_users(ANN)
    lines = [f"T{i:04d},active,{ANN}\n" for i in range(8000)]
    lines[500] = f"T0005,completed,{ANN}\n"  # line 502 repeats line 7 (same chunk)
    lines[1500] = f"T0010,in_progress,{ANN}\n"  # 1502 repeats 12 (chunk 1 of chunk 0)
    lines[3100] = f"T0010,archived,{ANN}\n"  # 3102: again, from chunk 3
    lines[7900] = f"T1600,archived,{ANN}\n"  # 7902 (a late chunk) repeats 1602
    lines[20] = f"T2990,nope,{ANN}\n"  # 22: invalid, so line 2992 is the original
    lines[2995] = f"T2990,completed,{ANN}\n"  # 2997: a copy of 2992
    name = write(import_root, "early.csv", HEADER + "".join(lines))
    job_id = queued_import(name, mode=mode)
    # When the plan runs each chunk it hands over at once, before the plan has ended
    during_plan: list[int] = []
    later: list[int] = []

    def enqueue(jid: int, chunk_no: int) -> None:
        if ledger.plan_of(jid) == []:  # the plan has not committed
            if interrupted and chunk_no == 2 and during_plan == [0, 1]:
                raise BrokerUnavailable("the plan stops after two chunks ran")
            during_plan.append(chunk_no)
            runner.run_chunk(jid, chunk_no, IMPORT)
        else:
            later.append(chunk_no)

    if interrupted:  # (and planned again from the start: chunks 0 and 1 are sent again)
        with pytest.raises(BrokerUnavailable):
            runner.start_job(job_id, IMPORT, enqueue)
    runner.start_job(job_id, IMPORT, enqueue)
    for chunk_no in later:
        runner.run_chunk(job_id, chunk_no, IMPORT)
    # Then the first chunks ran during the plan, the rest after it
    sent_again = [0, 1] if interrupted else []
    assert during_plan == [*sent_again, *range(EARLY_CHUNKS)]
    assert later == list(range(EARLY_CHUNKS, 8))
    # And the result is one sequential pass's (skip only skips rows already in the table)
    s = client.summary(job_id)
    rejects = {r.line: r.reason for r in client.rejects(job_id)}
    assert set(rejects) == {22, 502, 1502, 2997, 3102, 7902}
    assert rejects[1502] == rejects[3102] == "duplicate of line 12 in this file"
    assert rejects[7902] == "duplicate of line 1602 in this file"
    assert rejects[2997] == "duplicate of line 2992 in this file"
    assert counts(s) == Counts("partially_succeeded", read=8000, inserted=7994, rejected=6)
    table = {t: st for t, st, _ in todos()}
    assert len(table) == 7994
    assert table["T0005"] == table["T0010"] == table["T1600"] == table["T2990"] == "active"
    assert "early_chunks" not in s.params  # the plan replaced them


def test_a_file_replaced_after_planning_loads_nothing_new(
    bulkops_env: dict[str, str], import_root: Path
) -> None:
    from worker.importer import IMPORT
    from worker.models import Job
    from worker.source import FileChangedError

    # Given a job planned on a file (no worker: the test drives the operation)
    seed_users(ANN)
    write(import_root, "r.csv", HEADER + "".join(f"old {i},active,{ANN}\n" for i in range(10)))
    job_id = queued_import("r.csv")
    with db.session_scope() as s:
        job = s.get(Job, job_id)
        assert job is not None
        specs = IMPORT.plan(s, job, ready=lambda spec, write: None)  # one chunk: none early
    job.params = {**job.params, "chunks": specs}
    # When the file is replaced (a new inode) before its chunk runs
    write(import_root, "new.csv", HEADER + "".join(f"new {i},active,{ANN}\n" for i in range(10)))
    (import_root / "new.csv").replace(import_root / "r.csv")
    # Then the chunk refuses it, saying so, and nothing of the new content loads
    with pytest.raises(FileChangedError, match="changed after the job was planned"):
        with db.session_scope() as s:
            IMPORT.run_chunk(s, job, specs[0])
    assert todos() == []


@pytest.mark.parametrize("mode", ["insert", "skip", "upsert"])
def test_chunks_that_meet_existing_keys_split_and_stay_exact(
    bulkops_env: dict[str, str], mode: str
) -> None:
    # Given a table with two keys, and a CHECK validation knows nothing of
    seed_users(ANN)
    with db.session_scope() as s:
        ann = int(s.execute(text("SELECT id FROM users")).scalar_one())
    execute(
        f"INSERT INTO todos (title, status, owner_id) VALUES ('a', 'active', {ann}), "
        f"('b', 'active', {ann})"
    )
    execute("ALTER TABLE todos ADD CONSTRAINT no_forbidden CHECK (status <> 'archived')")
    loader._route.pop("todos", None)

    def load(records: list[tuple[int, tuple[Any, ...]]]) -> loader.LoadOutcome:
        with db.session_scope() as s:
            return loader.load(s, TODOS, records, {}, mode, False)

    # When a chunk meets an existing key (straight COPY fails, then the split)
    first = load([(2, ("a", "completed", ann, None)), (3, ("c", "active", ann, None))])
    route_after_first = loader._route["todos"]
    # And the next chunk starts split: an existing key refused by the CHECK, a new row
    # refused by it, an identical existing row and a new one
    second = load(
        [
            (4, ("a", "archived", ann, None)),
            (5, ("d", "archived", ann, None)),
            (6, ("b", "active", ann, None)),
            (7, ("e", "active", ann, None)),
        ]
    )
    # Then each row is counted once, by the mode, and the database's refusals are rejects
    assert route_after_first == "split"
    rejected = {r.line: r.reason for r in first.rejects + second.rejects}
    if mode == "insert":
        assert (first.inserted, second.inserted) == (1, 1)
        assert set(rejected) == {2, 4, 5, 6}
        assert rejected[2].startswith("already exists")
    elif mode == "skip":
        assert (first.inserted, first.skipped, second.inserted, second.skipped) == (1, 1, 1, 2)
        assert set(rejected) == {5}
    else:
        assert (first.inserted, first.updated, second.inserted) == (1, 1, 1)
        assert (second.updated, second.skipped) == (0, 1)  # 'b' identical: left alone
        assert set(rejected) == {4, 5}
        assert "no_forbidden" in rejected[4]
    assert "no_forbidden" in rejected[5]
    loaded = {t[0] for t in todos()}
    assert loaded == {"a", "b", "c", "e"}
