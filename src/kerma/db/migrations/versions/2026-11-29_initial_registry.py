"""Initial registry: device, patient, study, dose_report, irradiation_event, rejected_object.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-29 16:18:27.010284
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""

    op.create_table(
        "device",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_key", sa.String(length=64), nullable=False),
        sa.Column("device_observer_uid", sa.String(length=64), nullable=True),
        sa.Column("manufacturer", sa.String(), nullable=True),
        sa.Column("manufacturer_model_name", sa.String(), nullable=True),
        sa.Column("device_serial_number", sa.String(), nullable=True),
        sa.Column("station_name", sa.String(), nullable=True),
        sa.Column("institution_name", sa.String(), nullable=True),
        sa.Column("software_versions", sa.String(), nullable=True),
        sa.Column("device_name", sa.String(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device")),
        sa.UniqueConstraint("device_key", name=op.f("uq_device_device_key")),
    )
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_device_device_observer_uid"), ["device_observer_uid"], unique=False
        )

    op.create_table(
        "patient",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pseudonym", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient")),
        sa.UniqueConstraint("pseudonym", name=op.f("uq_patient_pseudonym")),
    )
    op.create_table(
        "rejected_object",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("archive_sha256", sa.String(length=64), nullable=False),
        sa.Column("archive_path", sa.String(), nullable=False),
        sa.Column("file_name", sa.String(), nullable=True),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=True),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rejected_object")),
        sa.UniqueConstraint("archive_sha256", name=op.f("uq_rejected_object_archive_sha256")),
    )
    with op.batch_alter_table("rejected_object", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rejected_object_sop_instance_uid"), ["sop_instance_uid"], unique=False
        )

    op.create_table(
        "study",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.Integer(), nullable=True),
        sa.Column("accession_number", sa.String(), nullable=True),
        sa.Column("study_date", sa.Date(), nullable=True),
        sa.Column("study_time", sa.String(length=16), nullable=True),
        sa.Column("study_description", sa.String(), nullable=True),
        sa.Column("requested_procedure_description", sa.String(), nullable=True),
        sa.Column("procedure_reported", sa.String(), nullable=True),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("modalities", sa.String(length=64), nullable=True),
        sa.Column("patient_age_years", sa.Float(), nullable=True),
        sa.Column("patient_sex", sa.String(length=16), nullable=True),
        sa.Column("patient_weight_kg", sa.Float(), nullable=True),
        sa.Column("patient_size_m", sa.Float(), nullable=True),
        sa.Column("is_non_patient", sa.Boolean(), nullable=False),
        sa.Column("standard_exam", sa.String(), nullable=True),
        sa.Column("standard_exam_rule", sa.String(), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name=op.f("fk_study_device_id_device")
        ),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_study_patient_id_patient")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_study")),
        sa.UniqueConstraint(
            "study_instance_uid", "device_id", name=op.f("uq_study_study_instance_uid_device_id")
        ),
    )
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_study_device_id"), ["device_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_study_modality"), ["modality"], unique=False)
        batch_op.create_index(batch_op.f("ix_study_patient_id"), ["patient_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_study_study_date"), ["study_date"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_study_study_instance_uid"), ["study_instance_uid"], unique=False
        )

    op.create_table(
        "dose_report",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=True),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("archive_sha256", sa.String(length=64), nullable=False),
        sa.Column("archive_path", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("superseded_by_id", sa.Integer(), nullable=True),
        sa.Column("extractor_version", sa.String(length=32), nullable=False),
        sa.Column("warnings", sa.JSON(), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("number_of_events", sa.Integer(), nullable=False),
        sa.Column("ct_dlp_total_mgycm", sa.Float(), nullable=True),
        sa.Column("dap_total_gym2", sa.Float(), nullable=True),
        sa.Column("dose_rp_total_gy", sa.Float(), nullable=True),
        sa.Column("fluoro_time_total_s", sa.Float(), nullable=True),
        sa.Column("agd_total_mgy", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["study_id"], ["study.id"], name=op.f("fk_dose_report_study_id_study")
        ),
        sa.ForeignKeyConstraint(
            ["superseded_by_id"],
            ["dose_report.id"],
            name=op.f("fk_dose_report_superseded_by_id_dose_report"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dose_report")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_dose_report_sop_instance_uid")),
    )
    with op.batch_alter_table("dose_report", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_dose_report_archive_sha256"), ["archive_sha256"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_dose_report_study_id"), ["study_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_dose_report_superseded_by_id"), ["superseded_by_id"], unique=False
        )

    op.create_table(
        "irradiation_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dose_report_id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("event_index", sa.Integer(), nullable=False),
        sa.Column("event_key", sa.String(length=96), nullable=True),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        sa.Column("irradiation_event_uid", sa.String(length=64), nullable=True),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("datetime_started", sa.String(), nullable=True),
        sa.Column("irradiation_event_type", sa.String(), nullable=True),
        sa.Column("acquisition_protocol", sa.String(), nullable=True),
        sa.Column("comment", sa.String(), nullable=True),
        sa.Column("target_region", sa.String(), nullable=True),
        sa.Column("ct_acquisition_type", sa.String(), nullable=True),
        sa.Column("exposure_time_s", sa.Float(), nullable=True),
        sa.Column("scanning_length_mm", sa.Float(), nullable=True),
        sa.Column("nominal_single_collimation_width_mm", sa.Float(), nullable=True),
        sa.Column("nominal_total_collimation_width_mm", sa.Float(), nullable=True),
        sa.Column("pitch_factor", sa.Float(), nullable=True),
        sa.Column("number_of_xray_sources", sa.Integer(), nullable=True),
        sa.Column("ctdivol_mgy", sa.Float(), nullable=True),
        sa.Column("dlp_mgycm", sa.Float(), nullable=True),
        sa.Column("ctdiw_phantom_type", sa.String(), nullable=True),
        sa.Column("ctdivol_alert_value_mgy", sa.Float(), nullable=True),
        sa.Column("ctdivol_notification_value_mgy", sa.Float(), nullable=True),
        sa.Column("dlp_notification_value_mgycm", sa.Float(), nullable=True),
        sa.Column("water_equivalent_diameter_mm", sa.Float(), nullable=True),
        sa.Column("acquisition_plane", sa.String(), nullable=True),
        sa.Column("anatomical_structure", sa.String(), nullable=True),
        sa.Column("laterality", sa.String(), nullable=True),
        sa.Column("image_view", sa.String(), nullable=True),
        sa.Column("dap_gym2", sa.Float(), nullable=True),
        sa.Column("dose_rp_gy", sa.Float(), nullable=True),
        sa.Column("entrance_exposure_at_rp_mgy", sa.Float(), nullable=True),
        sa.Column("agd_mgy", sa.Float(), nullable=True),
        sa.Column("half_value_layer_mm", sa.Float(), nullable=True),
        sa.Column("kvp_kv", sa.Float(), nullable=True),
        sa.Column("tube_current_ma", sa.Float(), nullable=True),
        sa.Column("pulse_width_s", sa.Float(), nullable=True),
        sa.Column("exposure_mas", sa.Float(), nullable=True),
        sa.Column("number_of_pulses", sa.Float(), nullable=True),
        sa.Column("pulse_rate_per_s", sa.Float(), nullable=True),
        sa.Column("irradiation_duration_s", sa.Float(), nullable=True),
        sa.Column("focal_spot_size_mm", sa.Float(), nullable=True),
        sa.Column("xray_filter_material", sa.String(), nullable=True),
        sa.Column("xray_filter_thickness_min_mm", sa.Float(), nullable=True),
        sa.Column("xray_filter_thickness_max_mm", sa.Float(), nullable=True),
        sa.Column("anode_target_material", sa.String(), nullable=True),
        sa.Column("compression_thickness_mm", sa.Float(), nullable=True),
        sa.Column("compression_force_n", sa.Float(), nullable=True),
        sa.Column("positioner_primary_angle_deg", sa.Float(), nullable=True),
        sa.Column("positioner_secondary_angle_deg", sa.Float(), nullable=True),
        sa.Column("collimated_field_area_m2", sa.Float(), nullable=True),
        sa.Column("distance_source_to_detector_mm", sa.Float(), nullable=True),
        sa.Column("distance_source_to_isocenter_mm", sa.Float(), nullable=True),
        sa.Column("distance_source_to_rp_mm", sa.Float(), nullable=True),
        sa.Column("table_longitudinal_position_mm", sa.Float(), nullable=True),
        sa.Column("table_lateral_position_mm", sa.Float(), nullable=True),
        sa.Column("table_height_position_mm", sa.Float(), nullable=True),
        sa.Column("patient_table_relationship", sa.String(), nullable=True),
        sa.Column("patient_orientation", sa.String(), nullable=True),
        sa.Column("patient_orientation_modifier", sa.String(), nullable=True),
        sa.Column("entrance_dose_mgy", sa.Float(), nullable=True),
        sa.Column("exposure_index", sa.Float(), nullable=True),
        sa.Column("target_exposure_index", sa.Float(), nullable=True),
        sa.Column("deviation_index", sa.Float(), nullable=True),
        sa.Column("radiopharmaceutical_agent", sa.String(), nullable=True),
        sa.Column("radionuclide", sa.String(), nullable=True),
        sa.Column("radionuclide_half_life_s", sa.Float(), nullable=True),
        sa.Column("administered_activity_mbq", sa.Float(), nullable=True),
        sa.Column("radiopharmaceutical_start_datetime", sa.String(), nullable=True),
        sa.Column("radiopharmaceutical_stop_datetime", sa.String(), nullable=True),
        sa.Column("route_of_administration", sa.String(), nullable=True),
        sa.Column("radiopharmaceutical_volume_ml", sa.Float(), nullable=True),
        sa.Column("xray_sources", sa.JSON(), nullable=True),
        sa.Column("xray_filters", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["dose_report_id"],
            ["dose_report.id"],
            name=op.f("fk_irradiation_event_dose_report_id_dose_report"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["study.id"], name=op.f("fk_irradiation_event_study_id_study")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_irradiation_event")),
    )
    with op.batch_alter_table("irradiation_event", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_irradiation_event_dose_report_id"), ["dose_report_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_irradiation_event_event_key"), ["event_key"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_irradiation_event_irradiation_event_uid"),
            ["irradiation_event_uid"],
            unique=False,
        )
        batch_op.create_index(
            "ix_irradiation_event_study_current", ["study_id", "is_current"], unique=False
        )


def downgrade() -> None:
    """Revert this revision."""

    with op.batch_alter_table("irradiation_event", schema=None) as batch_op:
        batch_op.drop_index("ix_irradiation_event_study_current")
        batch_op.drop_index(batch_op.f("ix_irradiation_event_irradiation_event_uid"))
        batch_op.drop_index(batch_op.f("ix_irradiation_event_event_key"))
        batch_op.drop_index(batch_op.f("ix_irradiation_event_dose_report_id"))

    op.drop_table("irradiation_event")
    with op.batch_alter_table("dose_report", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dose_report_superseded_by_id"))
        batch_op.drop_index(batch_op.f("ix_dose_report_study_id"))
        batch_op.drop_index(batch_op.f("ix_dose_report_archive_sha256"))

    op.drop_table("dose_report")
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_study_study_instance_uid"))
        batch_op.drop_index(batch_op.f("ix_study_study_date"))
        batch_op.drop_index(batch_op.f("ix_study_patient_id"))
        batch_op.drop_index(batch_op.f("ix_study_modality"))
        batch_op.drop_index(batch_op.f("ix_study_device_id"))

    op.drop_table("study")
    with op.batch_alter_table("rejected_object", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rejected_object_sop_instance_uid"))

    op.drop_table("rejected_object")
    op.drop_table("patient")
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_device_observer_uid"))

    op.drop_table("device")
