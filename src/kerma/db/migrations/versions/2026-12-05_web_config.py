"""Configuration an admin changes in the browser (issue #13).

- ``site_exam_rule``: the site's standard-exam rules, tried before the rules of
  ``KERMA_EXAM_RULES_PATH`` or the packaged defaults; one row per ``[[rule]]`` of the
  exam-rules TOML format (conditions ``any``/``all``/``none`` as JSON).

The DRL set and the alert-rule overrides are ``registry_setting`` values
(``web.drl_set``, ``web.alert_rule_overrides``); no table needed.

Revision ID: 0018_web_config
Revises: 0016_quality
Create Date: 2026-12-05 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018_web_config"
down_revision: str | None = "0016_quality"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "site_exam_rule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("exam", sa.String(length=256), nullable=False),
        sa.Column("modality", sa.String(length=256), nullable=True),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("conditions", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.String(length=128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_site_exam_rule")),
        sa.UniqueConstraint("name", name=op.f("uq_site_exam_rule_name")),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("site_exam_rule")
