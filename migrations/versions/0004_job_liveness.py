"""job liveness: re-send marks for jobs and chunk starts; ids of --ids-file updates

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 21:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes  # noqa: F401
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("resent_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "job_chunk_starts", sa.Column("resent_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_table(
        "job_update_ids",
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("line", sa.BigInteger(), nullable=False),
        sa.Column("todo_id", sa.BigInteger(), nullable=False),
        sa.Column("chunk_no", sa.Integer(), nullable=True),
        sa.Column("dup_of", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", "line"),
    )
    op.create_index("ix_job_update_ids_job_id_chunk_no", "job_update_ids", ["job_id", "chunk_no"])


def downgrade() -> None:
    op.drop_index("ix_job_update_ids_job_id_chunk_no", table_name="job_update_ids")
    op.drop_table("job_update_ids")
    op.drop_column("job_chunk_starts", "resent_at")
    op.drop_column("jobs", "resent_at")
