"""Keyed accession numbers, and the user's device names and merges.

- ``study.accession_pseudonym``: the keyed hash of the Accession Number
  (:mod:`kerma.ingest.pseudonym`, HMAC-SHA-256), indexed; ``study.accession_number``
  keeps the clear number only when ``KERMA_ACCESSION_IN_CLEAR`` is on. The hashes of
  the numbers already stored are computed when the registry is next opened with its
  key (``kerma.services.patients.protect_accession_numbers``; a migration cannot read
  the key without importing the ingest layer), which then clears the clear numbers
  from ``study`` and from ``dose_report.content``. ``kerma reprocess`` does the same.
- ``device_choice``: a user's display name and merge target per device identity
  (``device.device_key``), kept across ``kerma reprocess``.

Revision ID: 0004_devices_accession
Revises: 0005_plausibility
Create Date: 2026-12-05 07:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_devices_accession"
down_revision: str | None = "0005_plausibility"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.add_column(sa.Column("accession_pseudonym", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_study_accession_pseudonym"), ["accession_pseudonym"], unique=False
        )
    op.create_table(
        "device_choice",
        sa.Column("device_key", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(), nullable=True),
        sa.Column("merged_into_key", sa.String(length=64), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.now(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("device_key", name=op.f("pk_device_choice")),
    )
    with op.batch_alter_table("device_choice", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_device_choice_merged_into_key"), ["merged_into_key"], unique=False
        )


def downgrade() -> None:
    """Revert this revision (the keyed accession numbers and device choices are dropped)."""
    with op.batch_alter_table("device_choice", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_choice_merged_into_key"))
    op.drop_table("device_choice")
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_study_accession_pseudonym"))
        batch_op.drop_column("accession_pseudonym")
