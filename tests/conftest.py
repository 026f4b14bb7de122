"""Fixtures shared by every test layer.

Services: ``TEST_DATABASE_URL``/``TEST_REDIS_URL`` (or ``DATABASE_URL``/``REDIS_URL``)
when given, else the servers on 127.0.0.1 when they answer, else embedded ones
(a real PostgreSQL from a wheel, fakeredis's TCP server). If none can be had,
a test that needs them is skipped locally and **fails** in CI (``CI=true``).

Databases: one template database migrated to head per session; every test
that needs PostgreSQL gets a fresh clone of it (``CREATE DATABASE … TEMPLATE``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis_claims import claimed_db, refresh
from sqlalchemy import create_engine, text

from worker.app import using
from worker.config import load_settings, sqlalchemy_url
from worker.models import LEDGER_SCHEMA

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


LAYERS = ("unit", "integration", "acceptance")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its layer (its folder), so ``-m integration`` runs one layer alone."""
    for item in items:
        layer = next((p for p in item.path.parts if p in LAYERS), None)
        if layer is not None:
            item.add_marker(layer)


def _answers(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI: a missing service must never pass CI silently."""
    if IN_CI:
        pytest.fail(f"required service unavailable in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@dataclass(frozen=True)
class ServiceUrls:
    admin_database_url: str  # a database we may CREATE DATABASE from
    redis_url: str


@pytest.fixture(scope="session")
def service_urls() -> Iterator[ServiceUrls]:
    stack = contextlib.ExitStack()
    db_url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL")
    try:
        if not db_url:
            if _answers("127.0.0.1", 5432):
                db_url = "postgresql://postgres@127.0.0.1:5432/postgres"
            else:
                from worker.embedded import embedded_postgres

                tmp = Path(tempfile.mkdtemp(prefix="bulkops-pg-"))
                db_url = stack.enter_context(embedded_postgres(tmp / "pgdata"))
        if not redis_url:
            if _answers("127.0.0.1", 6379):
                # A database of this session's own: parallel runs never share queues.
                redis_url = stack.enter_context(claimed_db("redis://127.0.0.1:6379/0"))
                if redis_url is None:
                    unavailable("every Redis database on 127.0.0.1:6379 is claimed by other runs")
            else:
                from worker.embedded import embedded_redis

                redis_url = stack.enter_context(embedded_redis())
    except Exception as exc:  # noqa: BLE001 - reported as skip/fail below
        stack.close()
        unavailable(f"no PostgreSQL/Redis for tests: {exc}")
    assert db_url and redis_url
    with stack:
        yield ServiceUrls(db_url, redis_url)


@pytest.fixture(scope="session")
def admin_engine(service_urls: ServiceUrls):  # type: ignore[no-untyped-def]
    engine = create_engine(
        sqlalchemy_url(service_urls.admin_database_url), isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        unavailable(f"PostgreSQL at {service_urls.admin_database_url} does not answer: {exc}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def redis_available(service_urls: ServiceUrls) -> str:
    import redis

    client = redis.Redis.from_url(service_urls.redis_url, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        unavailable(f"Redis at {service_urls.redis_url} does not answer: {exc}")
    finally:
        client.close()
    return service_urls.redis_url


@pytest.fixture(scope="session")
def idle_redis_url(redis_available: str) -> Iterator[str]:
    """Another Redis database claimed for this session, which no worker consumes."""
    from urllib.parse import urlsplit

    with claimed_db(redis_available) as url:
        if url is None or urlsplit(redis_available).scheme not in {"redis", "rediss"}:
            unavailable("no idle Redis database to claim")
        assert url is not None
        yield url


@pytest.fixture(scope="session")
def template_database(admin_engine, service_urls: ServiceUrls) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A database migrated to head once per session, cloned by every test."""
    from worker import migrate

    name = f"bulkops_tmpl_{uuid.uuid4().hex[:8]}"
    with admin_engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = with_database(service_urls.admin_database_url, name)
    migrate.upgrade(url)
    yield name
    with admin_engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def fresh_database(admin_engine, service_urls: ServiceUrls, template: str | None) -> Iterator[str]:  # type: ignore[no-untyped-def]
    name = f"bulkops_t_{uuid.uuid4().hex[:10]}"
    with admin_engine.connect() as conn:
        clause = f' TEMPLATE "{template}"' if template else ""
        conn.execute(text(f'CREATE DATABASE "{name}"{clause}'))
    try:
        yield with_database(service_urls.admin_database_url, name)
    finally:
        with admin_engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def empty_database_url(admin_engine, service_urls: ServiceUrls) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh database with no schema at all (for migration tests)."""
    with fresh_database(admin_engine, service_urls, None) as url:
        yield url


@pytest.fixture
def import_root(tmp_path: Path) -> Path:
    root = tmp_path / "imports"
    root.mkdir()
    return root


@pytest.fixture
def bulkops_env(
    admin_engine,  # type: ignore[no-untyped-def]
    service_urls: ServiceUrls,
    template_database: str,
    redis_available: str,
    import_root: Path,
) -> Iterator[dict[str, str]]:
    """A fresh migrated database and the test Redis, in use for the test (``worker.app.using``).

    Yields the environment to hand to subprocesses. Queues are emptied so no
    message of another test can run against this database.
    """
    with fresh_database(admin_engine, service_urls, template_database) as url:
        _first_job_id(url, next(_JOB_ID_BLOCKS) * JOB_IDS_PER_TEST + 1)
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "REDIS_URL": redis_available,
            "BULKOPS_IMPORT_ROOT": str(import_root),
            "BULKOPS_CHUNK_SIZE": "1000",
        }
        refresh(redis_available)
        _purge_queues(redis_available)
        with using(load_settings(env)):
            yield env


@pytest.fixture
def configure(bulkops_env: dict[str, str]) -> Iterator[Callable[..., None]]:
    """``configure(BULKOPS_X="1")``: the rest of the test runs on ``bulkops_env`` so changed.

    A value of None unsets the variable; each call adds to the changes before it.
    Subprocesses still get ``bulkops_env`` as it is.
    """
    changes: dict[str, str | None] = {}
    with contextlib.ExitStack() as stack:

        def change(**more: str | None) -> None:
            changes.update(more)
            stack.enter_context(using(load_settings({**bulkops_env, **changes})))

        yield change


# Every test's jobs get ids of their own. The in-process worker may still hold
# a message of an earlier test (a retry waiting for its countdown, a prefetched
# chunk) when the next test starts on a fresh database; with ids that are new to
# that database, such a message finds no job and does nothing, instead of
# running against the new test's job with the same id.
JOB_IDS_PER_TEST = 1_000_000
_JOB_ID_BLOCKS = itertools.count(1)


def _first_job_id(url: str, first: int) -> None:
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(
                text("SELECT setval(pg_get_serial_sequence(:t, 'id'), :n, false)"),
                {"t": f"{LEDGER_SCHEMA}.jobs", "n": first},
            )
    finally:
        engine.dispose()


def _purge_queues(redis_url: str) -> None:
    import redis

    from worker.queues import QUEUES

    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(*QUEUES, "unacked", "unacked_index")
    finally:
        client.close()
