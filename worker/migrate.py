"""Schema migrations through Alembic, from code (``bulkops migrate``, tests, demo)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

import migrations
from worker.config import get_settings, sqlalchemy_url
from worker.db import translated

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


# bulkops's Alembic revision, in a table of its own: an application's Alembic on
# the same database keeps its default ``alembic_version``.
VERSION_TABLE = "bulkops_alembic_version"


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
            revision = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    finally:
        engine.dispose()
    return None if revision is None else str(revision)
