"""Observation rows carry their replica's flush number, and each replica's last flush is kept,
so every replica can read what the others ingested (in order, once).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from canaryguard.adapters.store.schema import BigInt, UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("observation_rollups") as batch:
        batch.add_column(sa.Column("flush_seq", BigInt, nullable=True))
    op.create_index(
        "ix_observation_rollups_node_flush", "observation_rollups", ["node", "flush_seq"]
    )
    op.create_table(
        "observation_nodes",
        sa.Column("node", sa.String(32), primary_key=True),
        sa.Column("flush_seq", BigInt, nullable=False),
        sa.Column("flushed_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("observation_nodes")
    op.drop_index("ix_observation_rollups_node_flush", "observation_rollups")
    with op.batch_alter_table("observation_rollups") as batch:
        batch.drop_column("flush_seq")
