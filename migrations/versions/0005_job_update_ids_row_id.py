"""job update ids: todo_id -> row_id (an ids file's ids are of any target)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 14:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A rename keeps the rows: an --ids-file job planned before the upgrade runs on.
    op.alter_column("job_update_ids", "todo_id", new_column_name="row_id")


def downgrade() -> None:
    op.alter_column("job_update_ids", "row_id", new_column_name="todo_id")
