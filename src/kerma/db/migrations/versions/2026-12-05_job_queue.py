"""The job queue (issue #15): procrastinate's schema and ``job_failure``, PostgreSQL only.

Distributed whole-registry work (``kerma reprocess --queue``, ``kerma alerts recheck
--queue``, ``kerma worker``) runs on procrastinate, a PostgreSQL-backed job queue
(MIT). Its tables, types, functions and triggers are procrastinate's own schema of the
pinned version (``procrastinate/sql/schema.sql``, executed as shipped); Kerma adds
``job_failure`` (the error of each failed job, which procrastinate does not keep).
None of them are Kerma models: ``env.py`` leaves them out of the drift check.

SQLite has no queue: this revision changes nothing there.

A procrastinate upgrade that changes its schema needs a new Kerma revision applying
procrastinate's migration files from :data:`kerma.db.jobs.PROCRASTINATE_LAST_MIGRATION`
on (``tests/test_dependencies.py`` fails until then).

Revision ID: 0020_job_queue
Revises: 0019_event_partitions
Create Date: 2026-12-05 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0020_job_queue"
down_revision: str | None = "0019_event_partitions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JOB_FAILURE = """
CREATE TABLE job_failure (
    job_id bigint PRIMARY KEY REFERENCES procrastinate_jobs (id) ON DELETE CASCADE,
    task_name varchar(128) NOT NULL,
    error text NOT NULL,
    failed_at timestamp with time zone NOT NULL
)
"""

#: Drops every object procrastinate's schema made (its names all start "procrastinate_").
_DROP_PROCRASTINATE = r"""
DROP TABLE IF EXISTS procrastinate_events, procrastinate_periodic_defers,
    procrastinate_jobs, procrastinate_workers CASCADE;
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT p.oid::regprocedure AS f FROM pg_proc p
             WHERE p.proname LIKE 'procrastinate\_%'
               AND p.pronamespace = current_schema()::regnamespace LOOP
        EXECUTE 'DROP FUNCTION ' || r.f || ' CASCADE';
    END LOOP;
    FOR r IN SELECT t.oid::regtype AS t FROM pg_type t
             LEFT JOIN pg_class c ON c.oid = t.typrelid
             WHERE t.typname LIKE 'procrastinate\_%' AND t.typtype IN ('e', 'c')
               AND (c.relkind IS NULL OR c.relkind = 'c')
               AND t.typnamespace = current_schema()::regnamespace LOOP
        EXECUTE 'DROP TYPE ' || r.t || ' CASCADE';
    END LOOP;
END $$;
"""


def upgrade() -> None:
    """Apply this revision (PostgreSQL only)."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    from procrastinate.schema import SchemaManager

    from kerma.db.jobs import check_procrastinate_version

    check_procrastinate_version()
    # the driver's own execute: several statements, no parameters (the SQL holds '%')
    driver = bind.connection.driver_connection
    driver.execute(SchemaManager.get_schema())  # type: ignore[union-attr]
    op.execute(_JOB_FAILURE)


def downgrade() -> None:
    """Revert this revision (PostgreSQL only)."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("DROP TABLE IF EXISTS job_failure")
    bind.connection.driver_connection.execute(_DROP_PROCRASTINATE)  # type: ignore[union-attr]
