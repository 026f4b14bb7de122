"""Alembic environment: URL from worker.config, metadata from SQLModel."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, inspect, pool, text
from sqlmodel import SQLModel

import worker.models  # noqa: F401  (registers every table on SQLModel.metadata)
from worker.config import get_settings, sqlalchemy_url
from worker.migrate import QUALIFIED_VERSION_TABLE, VERSION_TABLE, owned_name, owned_object
from worker.models import LEDGER_SCHEMA

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = SQLModel.metadata
# bulkops's own version table: an application's Alembic (alembic_version) on the
# same database never reads or moves bulkops's revision, nor bulkops the app's.
LEGACY_VERSION_TABLE = "alembic_version"
# Where bulkops's tables and version table were before 0006 moved them.
OLD_SCHEMA = "public"
OPTIONS: dict[str, Any] = {
    "target_metadata": target_metadata,
    "compare_type": True,
    "version_table": VERSION_TABLE,
    "version_table_schema": LEDGER_SCHEMA,
    # The check compares bulkops's objects only: the ledger's schema and the
    # example's tables, never an application's (worker.migrate.owned_name).
    "include_schemas": True,
    "include_name": owned_name,
    "include_object": owned_object,
}
CREATE_SCHEMA = f"CREATE SCHEMA IF NOT EXISTS {LEDGER_SCHEMA}"
# While migrations run, an unqualified name means the ledger's schema first: the
# ledger's DDL of 0001-0005 (unqualified, as generated) creates it there directly,
# next to an application's own public.jobs; the example's tables name public.
LEDGER_FIRST = f"SET LOCAL search_path TO {LEDGER_SCHEMA}, {OLD_SCHEMA}"


def _url() -> str:
    return sqlalchemy_url(config.attributes.get("url") or get_settings().database_url)


def run_migrations_offline() -> None:
    context.configure(
        url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"}, **OPTIONS
    )
    with context.begin_transaction():
        context.execute(CREATE_SCHEMA)
        context.execute(LEDGER_FIRST)
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _prepare(connection: Connection) -> None:
    """Before any migration: the ledger's schema, with bulkops's version table in it.

    A database migrated before 0006 has that table in ``public``: it moves
    there, revision and all, so the upgrade to 0006 runs as any other.
    """
    connection.execute(text(CREATE_SCHEMA))
    insp = inspect(connection)
    if insp.has_table(VERSION_TABLE, schema=LEDGER_SCHEMA):
        return
    if insp.has_table(VERSION_TABLE, schema=OLD_SCHEMA):
        connection.execute(
            text(f"ALTER TABLE {OLD_SCHEMA}.{VERSION_TABLE} SET SCHEMA {LEDGER_SCHEMA}")
        )
        return
    _adopt_legacy_version(connection)


def _adopt_legacy_version(connection: Connection) -> None:
    """A database migrated before bulkops had its own version table: move its revision.

    Only when ``alembic_version`` holds exactly one of bulkops's revisions and
    bulkops's ``jobs`` table exists; ``alembic_version`` is dropped if that
    leaves it empty. Anything else there (an application's revision) is left alone.
    """
    insp = inspect(connection)
    if not insp.has_table(LEGACY_VERSION_TABLE, schema=OLD_SCHEMA):
        return
    # Such a database predates 0006: its ledger is in public, with 0001's trigger
    # function (an application's own jobs table and revision "0001" are not bulkops's).
    ledger_in_public = connection.execute(
        text("SELECT to_regprocedure(:f) IS NOT NULL"),
        {"f": f"{OLD_SCHEMA}.bulkops_touch_updated_at()"},
    ).scalar_one()
    if not (ledger_in_public and insp.has_table("jobs", schema=OLD_SCHEMA)):
        return
    ours = {rev.revision for rev in ScriptDirectory.from_config(config).walk_revisions()}
    legacy = f"{OLD_SCHEMA}.{LEGACY_VERSION_TABLE}"
    found = [r[0] for r in connection.execute(text(f"SELECT version_num FROM {legacy}"))]
    if len(found) != 1 or found[0] not in ours:
        return
    connection.execute(
        text(
            f"CREATE TABLE {QUALIFIED_VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, "
            f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))"
        )
    )
    connection.execute(text(f"INSERT INTO {QUALIFIED_VERSION_TABLE} VALUES (:v)"), {"v": found[0]})
    connection.execute(text(f"DROP TABLE {legacy}"))


def _leave_nothing_at_base(
    ctx: MigrationContext, step: MigrationInfo, heads: Collection[str], run_args: Mapping[str, Any]
) -> None:
    """At base bulkops leaves nothing of its own: its version table goes (Alembic would
    keep it, empty), and the ledger's schema too unless something else is in it."""
    if heads:
        return
    conn = ctx.connection
    assert conn is not None
    conn.execute(text(f"DROP TABLE {QUALIFIED_VERSION_TABLE}"))
    in_schema = conn.execute(
        text(
            "SELECT EXISTS (SELECT 1 FROM pg_depend WHERE refclassid = 'pg_namespace'::regclass "
            "AND refobjid = CAST(:schema AS regnamespace))"
        ),
        {"schema": LEDGER_SCHEMA},
    ).scalar_one()
    if not in_schema:
        conn.execute(text(f"DROP SCHEMA {LEDGER_SCHEMA}"))


def _run(connection: Connection) -> None:
    context.configure(connection=connection, on_version_apply=_leave_nothing_at_base, **OPTIONS)
    with context.begin_transaction():
        _prepare(connection)
        before = connection.execute(text("SELECT current_setting('search_path')")).scalar_one()
        if not _autogenerating():  # the check reflects with the session's own search_path
            connection.execute(text(LEDGER_FIRST))
        context.run_migrations()
        # back as it was for the rest of a caller's transaction (migrate.rebuild)
        connection.execute(text("SELECT set_config('search_path', :p, true)"), {"p": before})


def _autogenerating() -> bool:
    """``alembic check`` or ``revision --autogenerate``: a comparison, no migration runs."""
    return context.get_context().opts.get("revision_context") is not None


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
