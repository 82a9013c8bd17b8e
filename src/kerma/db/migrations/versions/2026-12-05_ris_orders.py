"""Orders, results and patient updates from the RIS (HL7 v2) and FHIR (issue #18).

- ``ris_order``: one row per order (keyed hash of the accession number, unique) or per
  patient update of a day (keyed hash of the patient; no accession), with the weight
  (kg), height (m), requested procedure and ordering department.
- ``ris_message``: every received message, accepted or not, with its outcome; the
  message is kept encrypted in the archive (``archive_path``).
- ``study.patient_weight_source`` / ``patient_size_source``: ``device``, ``ris`` or
  ``fhir``; ``study.requested_procedure_code``: the matched order's code.

Revision ID: 0017_orders
Revises: 0011_export_marker
Create Date: 2026-12-05 10:15:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_orders"
down_revision: str | None = "0011_export_marker"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "ris_order",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("accession_pseudonym", sa.String(length=64), nullable=True),
        sa.Column("patient_pseudonym", sa.String(length=64), nullable=True),
        sa.Column("order_date", sa.Date(), nullable=True),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("requested_procedure_code", sa.String(), nullable=True),
        sa.Column("requested_procedure_text", sa.String(), nullable=True),
        sa.Column("ordering_department", sa.String(), nullable=True),
        sa.Column("patient_weight_kg", sa.Float(), nullable=True),
        sa.Column("patient_size_m", sa.Float(), nullable=True),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("sending_application", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ris_order")),
        sa.UniqueConstraint("accession_pseudonym", name=op.f("uq_ris_order_accession_pseudonym")),
    )
    op.create_index(
        "ix_ris_order_patient_date", "ris_order", ["patient_pseudonym", "order_date"], unique=False
    )
    op.create_table(
        "ris_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("archive_sha256", sa.String(length=64), nullable=False),
        sa.Column("archive_path", sa.String(), nullable=False),
        sa.Column("transport", sa.String(length=16), nullable=False),
        sa.Column("sending_application", sa.String(length=64), nullable=True),
        sa.Column("message_type", sa.String(length=32), nullable=True),
        sa.Column("message_control_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("ris_order_id", sa.Integer(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["ris_order_id"],
            ["ris_order.id"],
            name=op.f("fk_ris_message_ris_order_id_ris_order"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ris_message")),
    )
    with op.batch_alter_table("ris_message", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ris_message_archive_sha256"), ["archive_sha256"], unique=False
        )
        batch_op.create_index(
            "ix_ris_message_status_received", ["status", "received_at"], unique=False
        )
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.add_column(sa.Column("patient_weight_source", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("patient_size_source", sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column("requested_procedure_code", sa.String(), nullable=True))


def downgrade() -> None:
    """Revert this revision (orders, messages and the sources of weight/height dropped)."""
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.drop_column("requested_procedure_code")
        batch_op.drop_column("patient_size_source")
        batch_op.drop_column("patient_weight_source")
    with op.batch_alter_table("ris_message", schema=None) as batch_op:
        batch_op.drop_index("ix_ris_message_status_received")
        batch_op.drop_index(batch_op.f("ix_ris_message_archive_sha256"))
    op.drop_table("ris_message")
    op.drop_index("ix_ris_order_patient_date", table_name="ris_order")
    op.drop_table("ris_order")
