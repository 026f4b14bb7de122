"""Apply the shop's migrations to a database (``alembic upgrade head``, programmatically)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from worker.config import sqlalchemy_url

# Alembic's default, as an application has it: bulkops keeps its own revision in
# its own schema (bulkops_ledger.bulkops_alembic_version), so the two never meet.
VERSION_TABLE = "alembic_version"
HERE = Path(__file__).resolve().parent


def config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE / "migrations"))
    cfg.attributes["url"] = sqlalchemy_url(url)
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(config(url), revision)
