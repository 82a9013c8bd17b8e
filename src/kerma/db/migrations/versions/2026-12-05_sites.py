"""Sites: the ``site`` table, ``device.site_id``, ``study.site_id`` and ``user_site`` (#15).

A site is an institution of a multi-site registry; devices and studies carry the site
they were received for (``kerma.ingest.sites``), and ``user_site`` assigns users to
sites (a user with rows sees those sites' studies only). Existing rows get no site.

Revision ID: 0013_sites
Revises: 0017_orders
Create Date: 2026-12-05 10:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_sites"
down_revision: str | None = "0017_orders"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "site",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_site")),
        sa.UniqueConstraint("name", name=op.f("uq_site_name")),
    )
    op.create_table(
        "user_site",
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"], ["site.id"], name=op.f("fk_user_site_site_id_site"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("username", "site_id", name=op.f("pk_user_site")),
    )
    with op.batch_alter_table("user_site", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_user_site_site_id"), ["site_id"], unique=False)
    for table in ("device", "study"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("site_id", sa.Integer(), nullable=True))
            batch_op.create_index(batch_op.f(f"ix_{table}_site_id"), ["site_id"], unique=False)
            batch_op.create_foreign_key(
                batch_op.f(f"fk_{table}_site_id_site"), "site", ["site_id"], ["id"]
            )


def downgrade() -> None:
    """Revert this revision (site assignments are dropped)."""
    for table in ("study", "device"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(batch_op.f(f"fk_{table}_site_id_site"), type_="foreignkey")
            batch_op.drop_index(batch_op.f(f"ix_{table}_site_id"))
            batch_op.drop_column("site_id")
    with op.batch_alter_table("user_site", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_user_site_site_id"))
    op.drop_table("user_site")
    op.drop_table("site")
