"""users: onboarding_state (the first-run guide: pending, open, completed or skipped)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 18:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN (no batch copy of "users" on SQLite: its rows are referenced by cascading keys);
    # existing accounts start "pending", which shows the guide only to an administrator of an install that
    # has nothing to chat with (server/services/onboarding.py).
    op.add_column(
        "users", sa.Column("onboarding_state", sa.String(length=16), nullable=False, server_default="pending")
    )


def downgrade() -> None:
    op.drop_column("users", "onboarding_state")
