"""Study summary columns, event groups, per-event exams, one name per quantity.

- ``study``: summary columns derived from the current events and reports
  (``number_of_events`` ... ``image_size_source``, ``derived_at``) and the exam-rules
  fingerprint of the stored mapping. They are filled by the derive refresh
  (``kerma.services.derive``), which every command and ``kerma db upgrade`` run once
  after this migration (``registry_setting`` ``derive_version``); the migration itself
  leaves them empty.
- ``irradiation_event``: ``standard_exam`` (per projection / view) and
  ``event_group_id`` (new table ``event_group``) with the partial indexes that
  ``kerma summary`` ranks values through.
- ``patient_size_measurement``: ``water_equivalent_diameter_mm`` held localiser widths
  too; they move to ``patient_width_mm`` and ``direction`` says which (``dw``, ``lat``,
  ``ap``, from the method text).
- ``skin_dose_estimate.ka_r_total_mgy`` (mGy) becomes ``dose_rp_total_gy`` (Gy, the
  canonical unit): values are divided by 1000.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05 04:05:57.428726
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Event quantities with a partial ``(event_group_id, quantity)`` index.
SUMMARY_EVENT_QUANTITIES = (
    "ctdivol_mgy",
    "dlp_mgycm",
    "dap_gym2",
    "dose_rp_gy",
    "agd_mgy",
    "administered_activity_mbq",
)

#: Event columns covered by the DX/MG sample index.
SAMPLE_EVENT_COLUMNS = (
    "dap_gym2",
    "dose_rp_gy",
    "entrance_dose_mgy",
    "agd_mgy",
    "compression_thickness_mm",
    "image_view",
    "laterality",
)

#: Localizer method texts of revision 0002 (``kerma.records.SIZE_METHOD_LOCALIZER_*``),
#: written out: a migration must not change when the code does.
METHOD_LOCALIZER_LAT = "geometric LAT width (AP/PA localizer)"
METHOD_LOCALIZER_AP = "geometric AP width (lateral localizer)"

#: Summary columns added to ``study``: (name, type).
STUDY_COLUMNS: tuple[tuple[str, sa.types.TypeEngine[object]], ...] = (
    ("acquisition_protocols", sa.Text()),
    ("target_regions", sa.Text()),
    ("anatomical_structures", sa.Text()),
    ("image_views", sa.Text()),
    ("lateralities", sa.Text()),
    ("ct_dlp_total_mgycm", sa.Float()),
    ("ctdivol_mean_mgy", sa.Float()),
    ("ctdivol_max_mgy", sa.Float()),
    ("kvp_kv", sa.Float()),
    ("ssde_mgy", sa.Float()),
    ("ssde_size_mm", sa.Float()),
    ("ssde_size_source", sa.String(length=16)),
    ("ssde_reference", sa.String()),
    ("effective_dose_msv", sa.Float()),
    ("effective_dose_k_msv_per_mgycm", sa.Float()),
    ("effective_dose_reference", sa.String()),
    ("dap_total_gym2", sa.Float()),
    ("dap_total_plane_a_gym2", sa.Float()),
    ("dap_total_plane_b_gym2", sa.Float()),
    ("dose_rp_total_gy", sa.Float()),
    ("dose_rp_total_plane_a_gy", sa.Float()),
    ("dose_rp_total_plane_b_gy", sa.Float()),
    ("fluoro_time_total_s", sa.Float()),
    ("agd_total_left_mgy", sa.Float()),
    ("agd_total_right_mgy", sa.Float()),
    ("administered_activity_total_mbq", sa.Float()),
    ("image_size_mm", sa.Float()),
    ("image_size_source", sa.String(length=16)),
    ("derived_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "registry_setting",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_registry_setting")),
    )
    op.create_table(
        "event_group",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("acquisition_protocol", sa.String(), nullable=False),
        sa.Column("is_non_patient", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"], ["device.id"], name=op.f("fk_event_group_device_id_device")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_group")),
        sa.UniqueConstraint(
            "modality",
            "device_id",
            "acquisition_protocol",
            "is_non_patient",
            name="uq_event_group_key",
        ),
    )
    with op.batch_alter_table("irradiation_event", schema=None) as batch_op:
        batch_op.add_column(sa.Column("standard_exam", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("event_group_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_irradiation_event_event_group_id_event_group"),
            "event_group",
            ["event_group_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_index(
            "ix_irradiation_event_group_study", ["event_group_id", "study_id"], unique=False
        )
        mapped = sa.text("standard_exam IS NOT NULL")
        batch_op.create_index(
            "ix_irradiation_event_samples",
            ["event_group_id", "study_id", "standard_exam", *SAMPLE_EVENT_COLUMNS],
            unique=False,
            sqlite_where=mapped,
            postgresql_where=mapped,
        )
        for name in SUMMARY_EVENT_QUANTITIES:
            where = sa.text(f"{name} IS NOT NULL")
            batch_op.create_index(
                f"ix_irradiation_event_group_{name}",
                ["event_group_id", name],
                unique=False,
                sqlite_where=where,
                postgresql_where=where,
            )

    # patient size: localiser widths move out of the Dw column
    with op.batch_alter_table("patient_size_measurement", schema=None) as batch_op:
        batch_op.add_column(sa.Column("direction", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("patient_width_mm", sa.Float(), nullable=True))
        batch_op.alter_column(
            "water_equivalent_diameter_mm", existing_type=sa.Float(), nullable=True
        )
    size = sa.table(
        "patient_size_measurement",
        sa.column("image_type", sa.String),
        sa.column("method", sa.String),
        sa.column("direction", sa.String),
        sa.column("water_equivalent_diameter_mm", sa.Float),
        sa.column("patient_width_mm", sa.Float),
    )
    op.execute(size.update().where(size.c.image_type == "axial").values(direction="dw"))
    for direction, method in (("lat", METHOD_LOCALIZER_LAT), ("ap", METHOD_LOCALIZER_AP)):
        op.execute(
            size.update()
            .where(size.c.image_type != "axial", size.c.method.startswith(method))
            .values(
                direction=direction,
                patient_width_mm=size.c.water_equivalent_diameter_mm,
                water_equivalent_diameter_mm=None,
            )
        )
    op.execute(size.delete().where(size.c.direction.is_(None)))  # unknown localizer method
    with op.batch_alter_table("patient_size_measurement", schema=None) as batch_op:
        batch_op.alter_column("direction", existing_type=sa.String(length=8), nullable=False)

    # skin dose: Ka,r in Gy
    with op.batch_alter_table("skin_dose_estimate", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dose_rp_total_gy", sa.Float(), nullable=True))
    skin = sa.table(
        "skin_dose_estimate",
        sa.column("ka_r_total_mgy", sa.Float),
        sa.column("dose_rp_total_gy", sa.Float),
    )
    op.execute(skin.update().values(dose_rp_total_gy=skin.c.ka_r_total_mgy / 1000.0))
    with op.batch_alter_table("skin_dose_estimate", schema=None) as batch_op:
        batch_op.drop_column("ka_r_total_mgy")

    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("exam_rules_fingerprint", sa.String(length=16), nullable=True)
        )
        batch_op.add_column(
            sa.Column("number_of_events", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("number_of_reports", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("modality_family", sa.String(length=8), nullable=True))
        for name, type_ in STUDY_COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
        batch_op.create_index(
            "ix_study_date_time_id",
            ["study_date", "study_time", "id", "is_non_patient"],
            unique=False,
        )
        batch_op.create_index("ix_study_patient_date", ["patient_id", "study_date"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_study_exam_rules_fingerprint"), ["exam_rules_fingerprint"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_study_modality_family"), ["modality_family"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_study_standard_exam"), ["standard_exam"], unique=False)


def downgrade() -> None:
    """Revert this revision (summary columns dropped; sizes and Ka,r converted back)."""
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_study_standard_exam"))
        batch_op.drop_index(batch_op.f("ix_study_modality_family"))
        batch_op.drop_index(batch_op.f("ix_study_exam_rules_fingerprint"))
        batch_op.drop_index("ix_study_patient_date")
        batch_op.drop_index("ix_study_date_time_id")
        for name, _ in reversed(STUDY_COLUMNS):
            batch_op.drop_column(name)
        batch_op.drop_column("modality_family")
        batch_op.drop_column("number_of_reports")
        batch_op.drop_column("number_of_events")
        batch_op.drop_column("exam_rules_fingerprint")

    with op.batch_alter_table("skin_dose_estimate", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ka_r_total_mgy", sa.Float(), nullable=True))
    skin = sa.table(
        "skin_dose_estimate",
        sa.column("ka_r_total_mgy", sa.Float),
        sa.column("dose_rp_total_gy", sa.Float),
    )
    op.execute(skin.update().values(ka_r_total_mgy=skin.c.dose_rp_total_gy * 1000.0))
    with op.batch_alter_table("skin_dose_estimate", schema=None) as batch_op:
        batch_op.drop_column("dose_rp_total_gy")

    size = sa.table(
        "patient_size_measurement",
        sa.column("water_equivalent_diameter_mm", sa.Float),
        sa.column("patient_width_mm", sa.Float),
    )
    op.execute(
        size.update()
        .where(size.c.patient_width_mm.is_not(None))
        .values(water_equivalent_diameter_mm=size.c.patient_width_mm)
    )
    with op.batch_alter_table("patient_size_measurement", schema=None) as batch_op:
        batch_op.alter_column(
            "water_equivalent_diameter_mm", existing_type=sa.Float(), nullable=False
        )
        batch_op.drop_column("patient_width_mm")
        batch_op.drop_column("direction")

    with op.batch_alter_table("irradiation_event", schema=None) as batch_op:
        for name in SUMMARY_EVENT_QUANTITIES:
            batch_op.drop_index(f"ix_irradiation_event_group_{name}")
        batch_op.drop_index("ix_irradiation_event_samples")
        batch_op.drop_index("ix_irradiation_event_group_study")
        batch_op.drop_constraint(
            batch_op.f("fk_irradiation_event_event_group_id_event_group"), type_="foreignkey"
        )
        batch_op.drop_column("event_group_id")
        batch_op.drop_column("standard_exam")

    op.drop_table("event_group")
    op.drop_table("registry_setting")
