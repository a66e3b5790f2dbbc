"""model_configs become presets: owner_id (personal, owned by a user) or NULL (shared with everyone)

The old per-provider unique name no longer fits (two users may both name a preset "Coder"); names are kept
unique in the service instead: a user's personal presets among themselves, shared ones among themselves.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 16:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite cannot drop a constraint in place, so the table is copied. Nothing references
    # model_configs, so dropping the old copy cascades nowhere; every existing row is kept and becomes a
    # shared preset (owner_id NULL). On PostgreSQL these are plain ALTERs.
    with op.batch_alter_table("model_configs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_id", sa.Uuid(), nullable=True))
        batch_op.drop_constraint("uq_model_configs_provider_id_name", type_="unique")
        batch_op.create_foreign_key(
            op.f("fk_model_configs_owner_id_users"), "users", ["owner_id"], ["id"], ondelete="CASCADE"
        )
        batch_op.create_index("ix_model_configs_owner_id", ["owner_id"], unique=False)


def downgrade() -> None:
    # Personal presets have no place in the old schema (and could break its unique names): they go.
    op.execute(sa.text("DELETE FROM model_configs WHERE owner_id IS NOT NULL"))
    with op.batch_alter_table("model_configs", schema=None) as batch_op:
        batch_op.drop_index("ix_model_configs_owner_id")
        batch_op.drop_constraint(op.f("fk_model_configs_owner_id_users"), type_="foreignkey")
        batch_op.drop_column("owner_id")
        batch_op.create_unique_constraint("uq_model_configs_provider_id_name", ["provider_id", "name"])
