"""cluster state: pull_cancels (cancel a pull another instance runs) and instance_snapshots (each
instance's metrics summary and active alerts, for deployment-wide /api/metrics and /api/alerts)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 17:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.db.base

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "instance_snapshots",
        sa.Column("instance", sa.String(length=128), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("alerts", sa.JSON(), nullable=False),
        sa.Column("updated_at", server.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("instance", name=op.f("pk_instance_snapshots")),
    )
    with op.batch_alter_table("instance_snapshots", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instance_snapshots_updated_at"), ["updated_at"], unique=False)

    op.create_table(
        "pull_cancels",
        sa.Column("key", sa.String(length=1200), nullable=False),
        sa.Column("instance", sa.String(length=128), nullable=False),
        sa.Column("requested_at", server.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_pull_cancels")),
    )
    with op.batch_alter_table("pull_cancels", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pull_cancels_instance"), ["instance"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("pull_cancels", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pull_cancels_instance"))
    op.drop_table("pull_cancels")
    with op.batch_alter_table("instance_snapshots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_snapshots_updated_at"))
    op.drop_table("instance_snapshots")
