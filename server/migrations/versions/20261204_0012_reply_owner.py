"""replies know the instance that streams them (crash recovery at start)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 21:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMNs (no batch copy of "messages" on SQLite). Replies written before know no owner:
    # only the 45 s staleness rule applies to them.
    op.add_column("messages", sa.Column("instance_id", sa.String(length=64), nullable=True))
    op.add_column("messages", sa.Column("incarnation_id", sa.String(length=32), nullable=True))
    op.create_index("ix_messages_instance_id_status", "messages", ["instance_id", "status"])


def downgrade() -> None:
    op.drop_index("ix_messages_instance_id_status", table_name="messages")
    op.drop_column("messages", "incarnation_id")
    op.drop_column("messages", "instance_id")
