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

Only a database migrated before this revision existed has its ledger in
public: 0001-0005 now create it in the ledger's schema directly (env.py puts
that schema first in ``search_path``). So each table (and the function) moves
only where the other schema has none of the names it would take along (its
own, its indexes', its sequences'): the upgrade leaves an application's own
``public.jobs`` where it is, next to bulkops's already in the ledger's schema;
the downgrade puts the ledger back in public as 0005 had it, except a table
whose name public already has (the application's), which stays in the
ledger's schema, where 0001-0005's unqualified names still find it first
(env.py), so ``bulkops reset`` drops bulkops's and never the application's.
One statement each way (no reads from Python): ``--sql`` works as before.
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
FUNCTION = "bulkops_touch_updated_at()"
# A table of TABLES in {source} moves unless {target} already has a relation or
# type named as one of what moves with it: the table, its indexes, its sequences.
MOVE = """
DO $$
DECLARE
    tbl text;
    rel regclass;
BEGIN
    FOREACH tbl IN ARRAY ARRAY[{tables}] LOOP
        rel := to_regclass(format('%I.%I', '{source}', tbl));
        CONTINUE WHEN rel IS NULL OR EXISTS (
            SELECT 1 FROM pg_class moving
            WHERE (moving.oid = rel
                OR moving.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = rel)
                OR moving.oid IN (SELECT objid FROM pg_depend WHERE refobjid = rel
                    AND classid = 'pg_class'::regclass AND deptype IN ('a', 'i')))
            AND moving.relkind IN ('r', 'i', 'S')
            AND (EXISTS (SELECT 1 FROM pg_class WHERE relname = moving.relname
                    AND relnamespace = '{target}'::regnamespace)
                OR EXISTS (SELECT 1 FROM pg_type WHERE typname = moving.relname
                    AND typnamespace = '{target}'::regnamespace)));
        EXECUTE format('ALTER TABLE %I.%I SET SCHEMA %I', '{source}', tbl, '{target}');
    END LOOP;
    IF to_regprocedure('{source}.{function}') IS NOT NULL
            AND to_regprocedure('{target}.{function}') IS NULL THEN
        ALTER FUNCTION {source}.{function} SET SCHEMA {target};
    END IF;
END $$
"""


def _move(source: str, target: str) -> None:
    tables = ", ".join(f"'{t}'" for t in TABLES)
    op.execute(MOVE.format(tables=tables, source=source, target=target, function=FUNCTION))


def upgrade() -> None:
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {LEDGER}")  # env.py made it already, for Alembic
    _move(OLD, LEDGER)


def downgrade() -> None:
    # The schema itself stays: bulkops's version table is in it (env.py drops both at base).
    _move(LEDGER, OLD)
