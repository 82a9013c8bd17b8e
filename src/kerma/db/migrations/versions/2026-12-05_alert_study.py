"""Patient alerts' window studies: the ``alert_study`` table (#15).

A site-restricted principal sees a patient's cumulative alert when one study of its
window is of its sites. The table holds (alert, study) for every study of a patient
alert's ``detail["window_study_ids"]``; this revision back-fills it from the existing
patient alerts (ids that are no study any more are left out).

Revision ID: 0022_alert_study
Revises: 0021_token_sites
Create Date: 2026-12-05 17:30:00
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022_alert_study"
down_revision: str | None = "0021_token_sites"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Alerts read per batch by the back-fill.
_BATCH = 1000


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "alert_study",
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alert.id"],
            name=op.f("fk_alert_study_alert_id_alert"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["study.id"],
            name=op.f("fk_alert_study_study_id_study"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("alert_id", "study_id", name=op.f("pk_alert_study")),
    )
    with op.batch_alter_table("alert_study", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_study_study_id"), ["study_id"], unique=False)
    _backfill()


def _backfill() -> None:
    """Insert the window studies of the existing patient alerts, in batches of alerts."""
    bind = op.get_bind()
    last = 0
    while True:
        rows = bind.execute(
            sa.text(
                "SELECT id, detail FROM alert WHERE subject_kind = 'patient' AND id > :last "
                "ORDER BY id LIMIT :n"
            ),
            {"last": last, "n": _BATCH},
        ).all()
        if not rows:
            return
        for alert_id, detail in rows:
            if isinstance(detail, str):
                detail = json.loads(detail)
            ids = sorted({int(i) for i in (detail or {}).get("window_study_ids") or []})
            if ids:
                bind.execute(
                    sa.text(
                        "INSERT INTO alert_study (alert_id, study_id) "
                        "SELECT :alert_id, id FROM study WHERE id IN :ids"
                    ).bindparams(sa.bindparam("ids", expanding=True)),
                    {"alert_id": int(alert_id), "ids": ids},
                )
        last = int(rows[-1][0])


def downgrade() -> None:
    """Revert this revision (restricted principals see patient alerts of their study's
    site only again)."""
    with op.batch_alter_table("alert_study", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alert_study_study_id"))
    op.drop_table("alert_study")
