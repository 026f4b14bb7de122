"""The shop's Alembic environment: its own metadata, Alembic's default version table."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from example_shop.migrate import VERSION_TABLE
from example_shop.models import metadata

config = context.config


def run_migrations_online() -> None:
    engine = create_engine(config.attributes["url"], poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table=VERSION_TABLE,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
