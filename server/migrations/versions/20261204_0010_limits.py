"""limits: limit_overrides (per user and per API key), limit_counters (used per subject, kind and window),
limit_reservations (live stream slots and the tokens they reserved)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 21:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.db.base

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "limit_overrides",
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject_type", sa.String(length=8), nullable=False),
        sa.Column("value", sa.Integer(), nullable=True),
        sa.Column("updated_at", server.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subject_id", "kind", name=op.f("pk_limit_overrides")),
    )
    op.create_table(
        "limit_counters",
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("window_start", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("subject_id", "kind", "window_start", name=op.f("pk_limit_counters")),
    )
    op.create_table(
        "limit_reservations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("key_id", sa.Uuid(), nullable=True),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("charges", sa.JSON(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_limit_reservations")),
    )
    with op.batch_alter_table("limit_reservations", schema=None) as batch_op:
        batch_op.create_index("ix_limit_reservations_user_expires", ["user_id", "expires_at"], unique=False)
        batch_op.create_index("ix_limit_reservations_key_expires", ["key_id", "expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("limit_reservations", schema=None) as batch_op:
        batch_op.drop_index("ix_limit_reservations_key_expires")
        batch_op.drop_index("ix_limit_reservations_user_expires")
    op.drop_table("limit_reservations")
    op.drop_table("limit_counters")
    op.drop_table("limit_overrides")
