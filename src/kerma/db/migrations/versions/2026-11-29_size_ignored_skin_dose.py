"""Patient size measurements (SSDE from images), ignored network objects, skin dose estimates.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 19:00:07.253155
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "ignored_object",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=True),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("source", sa.String(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ignored_object")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_ignored_object_sop_instance_uid")),
    )
    with op.batch_alter_table("ignored_object", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ignored_object_study_instance_uid"), ["study_instance_uid"], unique=False
        )

    op.create_table(
        "patient_size_measurement",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("image_type", sa.String(length=16), nullable=False),
        sa.Column("water_equivalent_diameter_mm", sa.Float(), nullable=False),
        sa.Column("table_position_mm", sa.Float(), nullable=True),
        sa.Column("method", sa.String(), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_size_measurement")),
        sa.UniqueConstraint(
            "sop_instance_uid", name=op.f("uq_patient_size_measurement_sop_instance_uid")
        ),
    )
    with op.batch_alter_table("patient_size_measurement", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_patient_size_measurement_study_instance_uid"),
            ["study_instance_uid"],
            unique=False,
        )

    op.create_table(
        "skin_dose_estimate",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(), nullable=False),
        sa.Column("peak_skin_dose_mgy", sa.Float(), nullable=True),
        sa.Column("ka_r_total_mgy", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("map_path", sa.String(), nullable=True),
        sa.Column("dose_report_sop_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["study.id"],
            name=op.f("fk_skin_dose_estimate_study_id_study"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_skin_dose_estimate")),
        sa.UniqueConstraint("study_id", name=op.f("uq_skin_dose_estimate_study_id")),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("skin_dose_estimate")
    with op.batch_alter_table("patient_size_measurement", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patient_size_measurement_study_instance_uid"))

    op.drop_table("patient_size_measurement")
    with op.batch_alter_table("ignored_object", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ignored_object_study_instance_uid"))

    op.drop_table("ignored_object")
