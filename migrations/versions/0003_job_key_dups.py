"""job key dups: keys that occur more than once in an import file

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes  # noqa: F401
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_key_dups",
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("line", sa.BigInteger(), nullable=False),
        sa.Column("chunk_no", sa.Integer(), nullable=False),
        sa.Column("digest", sa.BigInteger(), nullable=False),
        sa.Column("start", sa.BigInteger(), nullable=False),
        sa.Column("end", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "line"),
    )
    op.create_index("ix_job_key_dups_job_id_digest", "job_key_dups", ["job_id", "digest"])


def downgrade() -> None:
    op.drop_index("ix_job_key_dups_job_id_digest", table_name="job_key_dups")
    op.drop_table("job_key_dups")
