"""Plausibility flags: values outside their plausibility range, studies flagged for review.

- ``plausibility_flag``: one row per stored value outside its range of
  ``kerma/reference/plausibility.csv`` (or not a finite number), with the study and the
  dose report it belongs to (issue #11). Objects with values that cannot be physical are
  rejected instead (``rejected_object``), so they have no rows here.

Existing registries get no rows from the migration: ``kerma reprocess`` checks the
stored reports against the table.

Revision ID: 0005_plausibility
Revises: 0007_alerts
Create Date: 2026-12-05 08:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_plausibility"
down_revision: str | None = "0007_alerts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "plausibility_flag",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("dose_report_id", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.String(length=64), nullable=False),
        sa.Column("location", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("value_text", sa.String(length=32), nullable=False),
        sa.Column("range_min", sa.Float(), nullable=True),
        sa.Column("range_max", sa.Float(), nullable=True),
        sa.Column("source", sa.String(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("flagged_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dose_report_id"],
            ["dose_report.id"],
            name=op.f("fk_plausibility_flag_dose_report_id_dose_report"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["study.id"],
            name=op.f("fk_plausibility_flag_study_id_study"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plausibility_flag")),
    )
    with op.batch_alter_table("plausibility_flag", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_plausibility_flag_dose_report_id"), ["dose_report_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_plausibility_flag_study_id"), ["study_id"], unique=False
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("plausibility_flag", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_plausibility_flag_study_id"))
        batch_op.drop_index(batch_op.f("ix_plausibility_flag_dose_report_id"))
    op.drop_table("plausibility_flag")
