"""ledger schema: bulkops's own tables and function move out of public

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 10:00:00

An application pointing bulkops at its own database then sees none of them in
its default schema (its ``alembic check``, its own ``jobs`` table). Indexes,
constraints, triggers and owned sequences move with their tables; the
example's ``users`` and ``todos`` stay where they are (the example's, not the
ledger's), their triggers still calling the moved function. The names are
frozen here, as the schema was at this revision.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEDGER = "bulkops_ledger"
OLD = "public"
TABLES = (
    "jobs",
    "job_chunks",
    "job_chunk_starts",
    "job_rejects",
    "job_key_dups",
    "job_update_ids",
    "health_checks",
)
FUNCTIONS = ("bulkops_touch_updated_at()",)


def _move(source: str, target: str) -> None:
    for table in TABLES:
        op.execute(f"ALTER TABLE {source}.{table} SET SCHEMA {target}")
    for function in FUNCTIONS:
        op.execute(f"ALTER FUNCTION {source}.{function} SET SCHEMA {target}")


def upgrade() -> None:
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {LEDGER}")  # env.py made it already, for Alembic
    _move(OLD, LEDGER)


def downgrade() -> None:
    # The schema itself stays: bulkops's version table is in it (env.py drops both at base).
    _move(LEDGER, OLD)
