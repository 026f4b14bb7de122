"""Acceptance: ``bulkops reset`` as a user runs it, on a fresh migrated database per test.

Refused unless BULKOPS_ENV=development and the database's name is typed back
(or --yes); a refusal is one line, exit 2, and leaves every table and row.
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from acceptance_support import (
    HeldLocks,
    bulkops_command,
    describe,
    execute,
    query,
    query_rows,
    without,
)

from worker import client
from worker.migrate import QUALIFIED_VERSION_TABLE
from worker.models import LEDGER_SCHEMA

pytestmark = pytest.mark.acceptance

LEDGER_TABLES = (
    "jobs",
    "job_chunks",
    "job_chunk_starts",
    "job_rejects",
    "job_key_dups",
    "job_update_ids",
    "health_checks",
)
OUR_TABLES = {"users", "todos", QUALIFIED_VERSION_TABLE} | {
    f"{LEDGER_SCHEMA}.{t}" for t in LEDGER_TABLES
}


def reset(env: dict[str, str], *args: str, typed: str = "") -> subprocess.CompletedProcess[str]:
    """``bulkops reset ARGS`` with ``typed`` on its standard input."""
    return subprocess.run(
        bulkops_command("reset", *args),
        env=env,
        input=typed,
        capture_output=True,
        text=True,
        timeout=180,  # a guard against a hang, not a measurement
    )


def database_name(env: dict[str, str]) -> str:
    return str(query(env, "SELECT current_database()"))


def dev(env: dict[str, str]) -> dict[str, str]:
    return {**env, "BULKOPS_ENV": "development"}


def tables(env: dict[str, str]) -> set[str]:
    """Every table of the database: in public by its name, elsewhere schema-qualified."""
    rows = query_rows(
        env,
        "SELECT CASE schemaname WHEN 'public' THEN tablename ELSE schemaname || '.' || tablename "
        "END FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
    )
    return {r[0] for r in rows}


@pytest.fixture
def filled(bulkops_env: dict[str, str]) -> dict[str, str]:
    """Rows in our tables, and an application's own tables next to them (one named like
    the ledger's jobs)."""
    env = without(bulkops_env, "BULKOPS_ENV")
    execute(env, "INSERT INTO users (email, name) VALUES ('a@example.com', 'A')")
    execute(
        env,
        "INSERT INTO todos (title, status, owner_id) "
        "SELECT 'todo ' || g, 'active', (SELECT id FROM users) FROM generate_series(1, 7) g",
    )
    execute(
        env,
        "INSERT INTO bulkops_ledger.jobs (kind, state, params) VALUES ('seed', 'succeeded', '{}')",
    )
    execute(env, "CREATE TABLE app_things (id serial PRIMARY KEY, name text)")
    execute(env, "INSERT INTO app_things (name) VALUES ('keep me')")
    execute(env, "CREATE TABLE public.jobs (id serial PRIMARY KEY, title text NOT NULL)")
    execute(env, "INSERT INTO public.jobs (title) VALUES ('the application''s')")
    return env


def fingerprint(env: dict[str, str]) -> tuple[Any, ...]:
    return (
        tables(env),
        query(env, "SELECT count(*) FROM users"),
        query(env, "SELECT count(*) FROM todos"),
        query(env, "SELECT count(*) FROM bulkops_ledger.jobs"),
        query(env, "SELECT count(*) FROM app_things"),
        query(env, "SELECT count(*) FROM public.jobs"),
        query(env, f"SELECT version_num FROM {QUALIFIED_VERSION_TABLE}"),
    )


def assert_refused(result: subprocess.CompletedProcess[str], says: str) -> None:
    assert result.returncode == 2, describe(result)
    assert "Traceback" not in result.stderr and result.stdout == "", describe(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("bulkops:")]
    assert len(errors) == 1 and says in errors[0], describe(result)


def test_refused_without_the_development_setting(filled: dict[str, str]) -> None:
    before = fingerprint(filled)
    assert before[1:6] == (1, 7, 1, 1, 1) and OUR_TABLES <= before[0]
    result = reset(filled, typed=database_name(filled) + "\n")  # even with the right name typed
    assert_refused(result, "BULKOPS_ENV is not 'development'")
    assert fingerprint(filled) == before


def test_refused_with_yes_but_without_the_setting(filled: dict[str, str]) -> None:
    before = fingerprint(filled)
    assert_refused(reset(filled, "--yes", "--seed"), "BULKOPS_ENV is not 'development'")
    assert_refused(reset({**filled, "BULKOPS_ENV": "production"}, "--yes"), "BULKOPS_ENV is not")
    assert fingerprint(filled) == before


def test_refused_when_the_wrong_name_is_typed(filled: dict[str, str]) -> None:
    before = fingerprint(filled)
    name = database_name(filled)
    for typed in ("postgres\n", name.upper() + "\n", "\n", ""):
        result = reset(dev(filled), typed=typed)
        assert_refused(result, "the name typed does not match")
        assert name in result.stderr
    assert fingerprint(filled) == before


def test_reset_drops_our_rows_keeps_the_application_table_and_migrates_to_head(
    filled: dict[str, str],
) -> None:
    head = query(filled, f"SELECT version_num FROM {QUALIFIED_VERSION_TABLE}")
    result = reset(dev(filled), typed=database_name(filled) + "\n")
    assert result.returncode == 0, describe(result)
    assert f"migrated to {head}" in result.stdout
    assert OUR_TABLES | {"app_things", "jobs"} == tables(filled)
    assert query(filled, f"SELECT version_num FROM {QUALIFIED_VERSION_TABLE}") == head
    for table in ("users", "todos", f"{LEDGER_SCHEMA}.jobs"):
        assert query(filled, f"SELECT count(*) FROM {table}") == 0, table
    assert query_rows(filled, "SELECT name FROM app_things") == [("keep me",)]
    assert query_rows(filled, "SELECT id, title FROM public.jobs") == [(1, "the application's")]
    # the schema works: ids start again, constraints are back
    execute(filled, "INSERT INTO users (email, name) VALUES ('b@example.com', 'B')")
    assert query(filled, "SELECT id FROM users") == 1


def test_reset_with_yes_and_seed_gives_the_seeded_rows(filled: dict[str, str]) -> None:
    result = reset(dev(filled), "--yes", "--seed")
    assert result.returncode == 0, describe(result)
    assert query(filled, "SELECT count(*) FROM users") == 10
    assert query(filled, "SELECT count(*) FROM todos") == 50
    assert query(filled, "SELECT count(*) FROM users WHERE email = 'a@example.com'") == 0
    job = query_rows(
        filled, "SELECT kind, state, rows_inserted, rows_rejected FROM bulkops_ledger.jobs"
    )
    assert job == [("seed", "succeeded", 60, 0)], describe(result)
    assert "seeded (job 1, succeeded): 60 rows inserted" in result.stdout


def test_reset_removes_the_jobs_uploaded_files(bulkops_env: dict[str, str]) -> None:
    # queued and never run: no worker here; its data waits in a large object
    job_id = client.submit_import(
        io.BytesIO(b"email,name\nx@example.com,X\n"), table="users", name="users.csv"
    )
    assert query(bulkops_env, "SELECT count(*) FROM pg_largeobject_metadata") == 1
    result = reset(dev(bulkops_env), "--yes")
    assert result.returncode == 0, describe(result)
    assert (
        query(bulkops_env, "SELECT count(*) FROM bulkops_ledger.jobs WHERE id = :id", id=job_id)
        == 0
    )
    assert query(bulkops_env, "SELECT count(*) FROM pg_largeobject_metadata") == 0


def test_reset_removes_the_jobs_objects_in_an_object_store(
    bulkops_env: dict[str, str], tmp_path: Path, configure: Callable[..., None]
) -> None:
    store = tmp_path / "object-store"
    configure(BULKOPS_UPLOAD_STORE=f"file://{store}")
    client.submit_import(io.BytesIO(b"email,name\nx@example.com,X\n"), table="users", name="u.csv")
    assert len(list(store.iterdir())) == 1
    result = reset(dev(bulkops_env), "--yes")
    assert result.returncode == 0, describe(result)
    assert list(store.iterdir()) == []


def test_reset_while_another_session_holds_a_table_changes_nothing(
    filled: dict[str, str],
) -> None:
    before = fingerprint(filled)
    with HeldLocks(filled, "LOCK TABLE todos IN ROW EXCLUSIVE MODE"):
        result = reset(dev(filled), "--yes")
    assert result.returncode == 1, describe(result)
    assert "another session holds bulkops's tables" in result.stderr, describe(result)
    assert fingerprint(filled) == before
