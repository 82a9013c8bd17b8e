"""Image quality beside dose (issue #17).

- ``irradiation_event``: ``deviation_index_calculated`` (IEC 62494-1 DI from EI and its
  target where the device gave no DI), ``detector_id`` (0018,700A), and the vendor
  exposure indices as stored: ``sensitivity`` (0018,6000) and ``relative_xray_exposure``
  (0018,1405). Filled for objects imported from now on; ``kerma reprocess`` fills them
  for objects already stored.
- ``rejected_instance``: images marked rejected for quality reasons (KOS DCM 113001, or
  a reject-log row naming a SOP Instance UID).
- ``reject_log_entry``: rows of DR systems' reject-log exports.
- ``ct_image_noise``: local-noise histograms of axial CT images (global noise level).

Revision ID: 0016_quality
Revises: 0013_sites (re-chained after merging main)
Create Date: 2026-12-05 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_quality"
down_revision: str | None = "0013_sites"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UID = sa.String(length=64)


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("irradiation_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deviation_index_calculated", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("detector_id", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("sensitivity", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("relative_xray_exposure", sa.Float(), nullable=True))
    op.create_table(
        "rejected_instance",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", UID, nullable=False),
        sa.Column("study_instance_uid", UID, nullable=True),
        sa.Column("series_instance_uid", UID, nullable=True),
        sa.Column("marked_by_uid", sa.String(length=96), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("archive_sha256", sa.String(length=64), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rejected_instance")),
        sa.UniqueConstraint(
            "marked_by_uid",
            "sop_instance_uid",
            name=op.f("uq_rejected_instance_marked_by_uid_sop_instance_uid"),
        ),
    )
    with op.batch_alter_table("rejected_instance", schema=None) as batch_op:
        for column in ("sop_instance_uid", "study_instance_uid", "marked_by_uid"):
            batch_op.create_index(batch_op.f(f"ix_rejected_instance_{column}"), [column])
    op.create_table(
        "reject_log_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        sa.Column("row_number", sa.Integer(), nullable=False),
        sa.Column("station_name", sa.String(), nullable=True),
        sa.Column("acquisition_datetime", sa.DateTime(), nullable=True),
        sa.Column("body_part", sa.String(), nullable=True),
        sa.Column("image_view", sa.String(), nullable=True),
        sa.Column("is_rejected", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(), nullable=True),
        sa.Column("sop_instance_uid", UID, nullable=True),
        sa.Column("study_instance_uid", UID, nullable=True),
        sa.Column("dap_gym2", sa.Float(), nullable=True),
        sa.Column("exposure_index", sa.Float(), nullable=True),
        sa.Column("deviation_index", sa.Float(), nullable=True),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reject_log_entry")),
        sa.UniqueConstraint(
            "file_sha256", "row_number", name=op.f("uq_reject_log_entry_file_sha256_row_number")
        ),
    )
    with op.batch_alter_table("reject_log_entry", schema=None) as batch_op:
        for column in ("file_sha256", "station_name", "sop_instance_uid"):
            batch_op.create_index(batch_op.f(f"ix_reject_log_entry_{column}"), [column])
    op.create_table(
        "ct_image_noise",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", UID, nullable=False),
        sa.Column("study_instance_uid", UID, nullable=False),
        sa.Column("series_instance_uid", UID, nullable=True),
        sa.Column("station_name", sa.String(), nullable=True),
        sa.Column("manufacturer_model_name", sa.String(), nullable=True),
        sa.Column("protocol_name", sa.String(), nullable=True),
        sa.Column("series_description", sa.String(), nullable=True),
        sa.Column("study_date", sa.Date(), nullable=True),
        sa.Column("ctdivol_mgy", sa.Float(), nullable=True),
        sa.Column("slice_thickness_mm", sa.Float(), nullable=True),
        sa.Column("convolution_kernel", sa.String(), nullable=True),
        sa.Column("kernel_mm", sa.Float(), nullable=False),
        sa.Column("tissue_pixels", sa.Integer(), nullable=False),
        sa.Column("histogram", sa.JSON(), nullable=False),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ct_image_noise")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_ct_image_noise_sop_instance_uid")),
    )
    with op.batch_alter_table("ct_image_noise", schema=None) as batch_op:
        batch_op.create_index("ix_ct_image_noise_series", ["series_instance_uid"])
        batch_op.create_index(
            batch_op.f("ix_ct_image_noise_study_instance_uid"), ["study_instance_uid"]
        )


def downgrade() -> None:
    """Revert this revision (quality rows and the new event columns are dropped)."""
    op.drop_table("ct_image_noise")
    op.drop_table("reject_log_entry")
    op.drop_table("rejected_instance")
    with op.batch_alter_table("irradiation_event", schema=None) as batch_op:
        batch_op.drop_column("relative_xray_exposure")
        batch_op.drop_column("sensitivity")
        batch_op.drop_column("detector_id")
        batch_op.drop_column("deviation_index_calculated")
