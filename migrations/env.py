"""Alembic environment: URL from worker.config, metadata from SQLModel."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, inspect, pool, text
from sqlmodel import SQLModel

import worker.models  # noqa: F401  (registers every table on SQLModel.metadata)
from worker.config import get_settings, sqlalchemy_url
from worker.migrate import VERSION_TABLE

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = SQLModel.metadata
# bulkops's own version table: an application's Alembic (alembic_version) on the
# same database never reads or moves bulkops's revision, nor bulkops the app's.
LEGACY_VERSION_TABLE = "alembic_version"


def _url() -> str:
    return sqlalchemy_url(config.attributes.get("url") or get_settings().database_url)


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
        compare_type=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
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


def _adopt_legacy_version(connection: Connection) -> None:
    """A database migrated before bulkops had its own version table: move its revision.

    Only when ``alembic_version`` holds exactly one of bulkops's revisions and
    bulkops's ``jobs`` table exists; ``alembic_version`` is dropped if that
    leaves it empty. Anything else there (an application's revision) is left alone.
    """
    insp = inspect(connection)
    if insp.has_table(VERSION_TABLE) or not insp.has_table(LEGACY_VERSION_TABLE):
        return
    if not insp.has_table("jobs"):
        return
    ours = {rev.revision for rev in ScriptDirectory.from_config(config).walk_revisions()}
    found = [
        r[0] for r in connection.execute(text(f"SELECT version_num FROM {LEGACY_VERSION_TABLE}"))
    ]
    if len(found) != 1 or found[0] not in ours:
        return
    connection.execute(
        text(
            f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, "
            f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))"
        )
    )
    connection.execute(text(f"INSERT INTO {VERSION_TABLE} VALUES (:v)"), {"v": found[0]})
    connection.execute(text(f"DROP TABLE {LEGACY_VERSION_TABLE}"))


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        _adopt_legacy_version(connection)
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
