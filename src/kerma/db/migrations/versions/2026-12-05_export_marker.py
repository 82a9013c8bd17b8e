"""Change marker for incremental exports: ``study.updated_at``.

``study.updated_at`` is set when a study row is inserted and again on every UPDATE
through SQLAlchemy (ORM flushes and Core ``update()`` alike: the column's
``default``/``onupdate`` in :class:`kerma.db.models.Study`), with microseconds, in UTC.
The incremental Parquet export (``kerma export parquet``, issue #14) compares it per
study month with its manifest to find the months to rewrite. Rows already stored get
the time of the upgrade (so the first export after the upgrade writes everything, as
it would anyway). Indexed: "studies changed since" is a range scan.

SQLite cannot add a column with a non-constant default, so the column is nullable and
filled by an UPDATE here; Kerma always writes it.

Revision ID: 0011_export_marker
Revises: 0004_devices_accession
Create Date: 2026-12-05 10:00:00
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_export_marker"
down_revision: str | None = "0010_users_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_study_updated_at"), ["updated_at"], unique=False)
    study = sa.table("study", sa.column("updated_at", sa.DateTime(timezone=True)))
    op.execute(study.update().values(updated_at=dt.datetime.now(dt.UTC)))


def downgrade() -> None:
    """Revert this revision (the change marker is dropped)."""
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_study_updated_at"))
        batch_op.drop_column("updated_at")
