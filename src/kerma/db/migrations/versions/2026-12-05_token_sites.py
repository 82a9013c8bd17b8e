"""API tokens restricted to sites: the ``api_token_site`` table (#15).

A token with rows sees the studies of those sites only, as a user with ``user_site``
rows does (``kerma tokens add NAME --site A``); existing tokens get no row and so
keep seeing every site.

Revision ID: 0021_token_sites
Revises: 0020_job_queue
Create Date: 2026-12-05 13:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021_token_sites"
down_revision: str | None = "0020_job_queue"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "api_token_site",
        sa.Column("api_token_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_token_id"],
            ["api_token.id"],
            name=op.f("fk_api_token_site_api_token_id_api_token"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["site.id"],
            name=op.f("fk_api_token_site_site_id_site"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("api_token_id", "site_id", name=op.f("pk_api_token_site")),
    )
    with op.batch_alter_table("api_token_site", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_token_site_site_id"), ["site_id"], unique=False)


def downgrade() -> None:
    """Revert this revision (tokens' site restrictions are dropped: they see every site)."""
    with op.batch_alter_table("api_token_site", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_token_site_site_id"))
    op.drop_table("api_token_site")
