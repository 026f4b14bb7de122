"""Schema migrations through Alembic, from code (``bulkops migrate``, tests, demo)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

import migrations
from worker.config import get_settings, sqlalchemy_url, targets_reference
from worker.db import translated
from worker.models import LEDGER_SCHEMA

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for our migrations; ``url`` overrides DATABASE_URL."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["configure_logging"] = False
    if url:
        cfg.attributes["url"] = url
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def check(url: str | None = None) -> None:
    """Raise if the models and the migrations disagree (autogenerate finds a diff)."""
    command.check(alembic_config(url))


# bulkops's Alembic revision, in a table of its own in the ledger's schema
# (LEDGER_SCHEMA): an application's Alembic on the same database keeps its
# default ``alembic_version``, and its ``alembic check`` never sees this one.
VERSION_TABLE = "bulkops_alembic_version"
QUALIFIED_VERSION_TABLE = f"{LEDGER_SCHEMA}.{VERSION_TABLE}"
EXAMPLE_TABLES = ("users", "todos")


def example_in_use() -> bool:
    """The built-in example's tables come with the example: only a database migrated
    without ``BULKOPS_TARGETS`` (the example in use) gets ``users`` and ``todos``, so
    ``bulkops migrate`` never meets an application's own tables of those names."""
    return targets_reference() is None


def owned_name(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
    """Alembic's ``include_name``: bulkops compares only what its migrations create.

    The ledger's schema, and in the default schema the example's tables when
    the example is in use; an application's tables there are not bulkops's.
    """
    if type_ == "schema":
        return name is None or name == LEDGER_SCHEMA
    if type_ == "table":
        schema = parent_names.get("schema_name")
        if schema == LEDGER_SCHEMA:
            return True
        return schema is None and name in EXAMPLE_TABLES and example_in_use()
    return True


def owned_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Alembic's ``include_object``: :func:`owned_name` for the models' tables too."""
    if type_ == "table":
        return owned_name(name, type_, {"schema_name": getattr(obj, "schema", None)})
    return True


def rebuild(
    url: str | None = None,
    before_drop: Callable[[Connection], object] | None = None,
    lock_timeout_s: float = 10.0,
) -> str | None:
    """Downgrade to base, then upgrade to head, in one transaction; the head revision.

    Only what the migrations created is dropped (their own downgrades), never
    a table of anyone else. All or nothing: a failure (a lock held longer
    than ``lock_timeout_s``, a foreign key of another table onto ours) rolls
    everything back. ``before_drop(conn)`` runs first, in the same transaction.
    """
    engine = create_engine(sqlalchemy_url(url or get_settings().database_url), poolclass=NullPool)
    try:
        with translated(), engine.begin() as conn:
            conn.execute(text(f"SET LOCAL lock_timeout = '{int(lock_timeout_s * 1000)}ms'"))
            if before_drop is not None:
                before_drop(conn)
            cfg = alembic_config()
            cfg.attributes["connection"] = conn  # env.py: run inside this transaction
            command.downgrade(cfg, "base")
            command.upgrade(cfg, "head")
            revision = conn.execute(
                text(f"SELECT version_num FROM {QUALIFIED_VERSION_TABLE}")
            ).scalar()
    finally:
        engine.dispose()
    return None if revision is None else str(revision)
