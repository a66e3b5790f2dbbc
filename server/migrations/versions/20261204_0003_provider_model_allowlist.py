"""providers: model_allowlist (the OpenAI-compatible models offered in the chat picker; empty = all)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 15:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN (no batch copy of the table on SQLite: dropping "providers" there would cascade
    # to model_configs); existing rows get the empty list, which means "every model".
    op.add_column("providers", sa.Column("model_allowlist", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    op.drop_column("providers", "model_allowlist")
