"""Conflicting copies are held, not rejected: report versions and the decision log.

- ``report_conflict``: one row per SOP Instance UID stored with two or more different
  contents (issue #11, item 3); ``report_version``: each version's archived object,
  how it arrived and its extracted content.
- ``conflict_decision``: the append-only log of decisions (user or rule). Triggers
  refuse UPDATE and DELETE on it, on SQLite and PostgreSQL.
- ``study.has_conflict``: a report of the study has an undecided conflict.

Conflicting copies rejected by earlier versions stay in ``rejected_object``; ``kerma
reprocess`` turns them into held versions.

Revision ID: 0009_conflicts
Revises: 0008_alert_outbox
Create Date: 2026-12-05 07:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_conflicts"
down_revision: str | None = "0008_alert_outbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The message of the triggers that keep the decision log append-only.
APPEND_ONLY = "conflict_decision is append-only: decisions are never changed or deleted"


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "report_conflict",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("dose_report_id", sa.Integer(), nullable=False),
        sa.Column("is_open", sa.Boolean(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["dose_report_id"],
            ["dose_report.id"],
            name=op.f("fk_report_conflict_dose_report_id_dose_report"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_conflict")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_report_conflict_sop_instance_uid")),
    )
    with op.batch_alter_table("report_conflict", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_report_conflict_dose_report_id"), ["dose_report_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_report_conflict_is_open"), ["is_open"], unique=False)
    op.create_table(
        "report_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("conflict_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        sa.Column("archive_sha256", sa.String(length=64), nullable=False),
        sa.Column("archive_path", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=True),
        sa.Column("transport", sa.String(length=16), nullable=False),
        sa.Column("calling_ae_title", sa.String(length=16), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("device_observer_uid", sa.String(length=64), nullable=True),
        sa.Column("patient_pseudonym", sa.String(length=64), nullable=True),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["conflict_id"],
            ["report_conflict.id"],
            name=op.f("fk_report_version_conflict_id_report_conflict"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_version")),
        sa.UniqueConstraint(
            "conflict_id", "version", name=op.f("uq_report_version_conflict_id_version")
        ),
        sa.UniqueConstraint(
            "conflict_id",
            "archive_sha256",
            name=op.f("uq_report_version_conflict_id_archive_sha256"),
        ),
    )
    with op.batch_alter_table("report_version", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_report_version_conflict_id"), ["conflict_id"], unique=False
        )
    op.create_table(
        "conflict_decision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("version_kept", sa.Integer(), nullable=False),
        sa.Column("version_before", sa.Integer(), nullable=False),
        sa.Column("archive_sha256_kept", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("decided_by", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conflict_decision")),
    )
    with op.batch_alter_table("conflict_decision", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_conflict_decision_sop_instance_uid"), ["sop_instance_uid"], unique=False
        )
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("has_conflict", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.create_index(batch_op.f("ix_study_has_conflict"), ["has_conflict"], unique=False)
    _create_append_only_triggers()


def _create_append_only_triggers() -> None:
    """Refuse UPDATE and DELETE on ``conflict_decision`` (SQLite and PostgreSQL)."""
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER conflict_decision_no_{action.lower()} BEFORE {action} "
                f"ON conflict_decision BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY}'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION conflict_decision_append_only() RETURNS trigger "
            f"LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '{APPEND_ONLY}'; END $$"
        )
        op.execute(
            "CREATE TRIGGER conflict_decision_append_only BEFORE UPDATE OR DELETE "
            "ON conflict_decision FOR EACH ROW EXECUTE FUNCTION conflict_decision_append_only()"
        )


def downgrade() -> None:
    """Revert this revision (the decision log and the held versions are dropped)."""
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS conflict_decision_no_{action}")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS conflict_decision_append_only ON conflict_decision")
        op.execute("DROP FUNCTION IF EXISTS conflict_decision_append_only()")
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_study_has_conflict"))
        batch_op.drop_column("has_conflict")
    with op.batch_alter_table("conflict_decision", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_conflict_decision_sop_instance_uid"))
    op.drop_table("conflict_decision")
    with op.batch_alter_table("report_version", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_report_version_conflict_id"))
    op.drop_table("report_version")
    with op.batch_alter_table("report_conflict", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_report_conflict_is_open"))
        batch_op.drop_index(batch_op.f("ix_report_conflict_dose_report_id"))
    op.drop_table("report_conflict")
