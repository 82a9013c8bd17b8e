"""Irradiation events partitioned by study month on PostgreSQL (issue #15).

- ``irradiation_event.study_month`` (date, NOT NULL): the first day of the month of
  ``study.study_date``, ``0001-01-01`` for a study without a date; filled from the
  study for every existing row.
- PostgreSQL: the table becomes ``PARTITION BY RANGE (study_month)``. A new partitioned
  table is created with the same columns and defaults (``id`` keeps its sequence), one
  partition ``irradiation_event_yYYYYmMM`` per month holding data plus the current
  month and the 12 after it, and ``irradiation_event_default``; the rows are copied,
  the old table dropped and the new one renamed; then the primary key becomes
  ``(id, study_month)`` (a partitioned table's unique keys must hold the partition key),
  and the indexes and foreign keys of the old table are created again from their
  definitions (on the parent, so on every partition). No table has a foreign key to
  ``irradiation_event``; the upgrade refuses to run if one has appeared.
- SQLite: only the column (with a server default of ``0001-01-01`` that SQLite needs to
  add a NOT NULL column; every insert sets it), then the backfill.

Downgrade: PostgreSQL copies the rows back into an unpartitioned table (primary key
``id``); both back ends drop the column.

Revision ID: 0019_event_partitions
Revises: 0018_web_config
Create Date: 2026-12-05 13:10:00
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019_event_partitions"
down_revision: str | None = "0018_web_config"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "irradiation_event"
UNDATED = "0001-01-01"
#: Months after the current one that get a partition at once (``kerma db partitions``
#: makes more later).
AHEAD_MONTHS = 12


def upgrade() -> None:
    """Apply this revision."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        _refuse_referencing_foreign_keys(bind)
        _rebuild_postgresql(bind, partitioned=True)
        return
    op.add_column(
        TABLE, sa.Column("study_month", sa.Date(), nullable=False, server_default=UNDATED)
    )
    op.execute(
        "UPDATE irradiation_event SET study_month = (SELECT date(s.study_date, 'start of month') "
        "FROM study s WHERE s.id = irradiation_event.study_id) "
        "WHERE study_id IN (SELECT id FROM study WHERE study_date IS NOT NULL)"
    )


def downgrade() -> None:
    """Revert this revision."""
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        _rebuild_postgresql(bind, partitioned=False)
        return
    with op.batch_alter_table(TABLE) as batch_op:
        batch_op.drop_column("study_month")


def _refuse_referencing_foreign_keys(bind: sa.Connection) -> None:
    """Raise when a table has a foreign key to ``irradiation_event`` (none at 0018)."""
    names = bind.execute(
        sa.text(
            "SELECT conrelid::regclass::text || '.' || conname FROM pg_constraint "
            "WHERE contype = 'f' AND confrelid = 'irradiation_event'::regclass"
        )
    ).scalars()
    found = sorted(names)
    if found:
        raise RuntimeError(
            "Unable to partition irradiation_event: foreign keys reference it "
            f"({', '.join(found)}); a partitioned table can only be referenced by "
            "(id, study_month). Drop or change them first."
        )


def _month_after(month: dt.date, count: int) -> dt.date:
    """Return the first day of the month ``count`` months after ``month``."""
    years, index = divmod(month.month - 1 + count, 12)
    return dt.date(month.year + years, index + 1, 1)


def _rebuild_postgresql(bind: sa.Connection, *, partitioned: bool) -> None:
    """Copy ``irradiation_event`` into a new (un)partitioned table of the same shape."""
    indexes = bind.execute(
        sa.text(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename = :t AND indexname <> 'pk_irradiation_event' ORDER BY indexname"
        ),
        {"t": TABLE},
    ).scalars()
    index_definitions = list(indexes)
    foreign_keys = bind.execute(
        sa.text(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE contype = 'f' AND conrelid = 'irradiation_event'::regclass ORDER BY conname"
        )
    ).all()
    sequence = bind.execute(
        sa.text("SELECT pg_get_serial_sequence('irradiation_event', 'id')")
    ).scalar()
    old_columns = [
        r[0]
        for r in bind.execute(
            sa.text(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = :t "
                "ORDER BY ordinal_position"
            ),
            {"t": TABLE},
        )
    ]
    new = f"{TABLE}_rebuilt"
    if partitioned:
        op.execute(
            f"CREATE TABLE {new} (LIKE {TABLE} INCLUDING DEFAULTS, "
            "study_month date NOT NULL) PARTITION BY RANGE (study_month)"
        )
        _create_partitions(bind, new)
        kept = ", ".join(old_columns)
        op.execute(
            f"INSERT INTO {new} ({kept}, study_month) "
            f"SELECT {', '.join('e.' + c for c in old_columns)}, "
            f"coalesce(date_trunc('month', s.study_date)::date, DATE '{UNDATED}') "
            f"FROM {TABLE} e JOIN study s ON s.id = e.study_id"
        )
    else:
        kept = ", ".join(c for c in old_columns if c != "study_month")
        op.execute(f"CREATE TABLE {new} (LIKE {TABLE} INCLUDING DEFAULTS)")
        op.execute(f"ALTER TABLE {new} DROP COLUMN study_month")
        op.execute(f"INSERT INTO {new} ({kept}) SELECT {kept} FROM {TABLE}")
    if sequence:
        op.execute(f"ALTER SEQUENCE {sequence} OWNED BY NONE")
    op.execute(f"DROP TABLE {TABLE} CASCADE")  # its partitions too, when partitioned
    op.execute(f"ALTER TABLE {new} RENAME TO {TABLE}")
    key = "id, study_month" if partitioned else "id"
    op.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT pk_irradiation_event PRIMARY KEY ({key})")
    for definition in index_definitions:
        op.execute(definition)
    for name, definition in foreign_keys:
        op.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT {name} {definition}")
    if sequence:
        op.execute(f"ALTER SEQUENCE {sequence} OWNED BY {TABLE}.id")
    op.execute(f"ANALYZE {TABLE}")


def _create_partitions(bind: sa.Connection, parent: str) -> None:
    """Create the DEFAULT partition and one per month with data or in the next year."""
    rows = bind.execute(
        sa.text(
            "SELECT DISTINCT date_trunc('month', s.study_date)::date FROM study s "
            "WHERE s.study_date IS NOT NULL AND EXISTS "
            f"(SELECT 1 FROM {TABLE} e WHERE e.study_id = s.id)"
        )
    ).scalars()
    today = dt.datetime.now(dt.UTC).date().replace(day=1)
    months = set(rows) | {_month_after(today, k) for k in range(AHEAD_MONTHS + 1)}
    for month in sorted(months):
        after = _month_after(month, 1)
        op.execute(
            f"CREATE TABLE {TABLE}_y{month.year:04d}m{month.month:02d} PARTITION OF {parent} "
            f"FOR VALUES FROM ('{month.isoformat()}') TO ('{after.isoformat()}')"
        )
    op.execute(f"CREATE TABLE {TABLE}_default PARTITION OF {parent} DEFAULT")
