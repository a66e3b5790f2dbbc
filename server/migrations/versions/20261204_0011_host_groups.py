"""providers: host_group, route_priority, route_weight (Ollama providers in one host group serve a model
name together, with routing, failover and health); model_routes (explicit routes
over several targets); messages.served_by

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 21:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.db.base

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN (no batch copy of the table on SQLite: dropping "providers" there would cascade
    # to model_configs); existing providers are in no group.
    op.add_column("providers", sa.Column("host_group", sa.String(length=64), nullable=True))
    op.create_index("ix_providers_host_group", "providers", ["host_group"])
    # How a group routes among its hosts: the smallest priority first, weighted random within one.
    op.add_column("providers", sa.Column("route_priority", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("providers", sa.Column("route_weight", sa.Double(), nullable=False, server_default="1"))
    # Which host served a reply of a routed model: {"provider_id", "name"} (null: not routed).
    op.add_column("messages", sa.Column("served_by", sa.JSON(), nullable=True))
    # Explicit routes: one model name served by several (provider, model) targets.
    op.create_table(
        "model_routes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", server.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", server.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_routes")),
        sa.UniqueConstraint("name", name=op.f("uq_model_routes_name")),
    )


def downgrade() -> None:
    op.drop_table("model_routes")
    op.drop_column("messages", "served_by")
    op.drop_column("providers", "route_weight")
    op.drop_column("providers", "route_priority")
    op.drop_index("ix_providers_host_group", table_name="providers")
    op.drop_column("providers", "host_group")
