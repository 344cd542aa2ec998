"""Rollbacks name their target and pre-rollback snapshots in columns, so retention can protect
them in the same DELETE that prunes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rollbacks") as batch:
        batch.add_column(sa.Column("target_snapshot_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("pre_snapshot_id", sa.String(64), nullable=True))
    rollbacks = sa.table(
        "rollbacks",
        sa.column("id", sa.String),
        sa.column("body", sa.Text),
        sa.column("target_snapshot_id", sa.String),
        sa.column("pre_snapshot_id", sa.String),
    )
    bind = op.get_bind()
    for row in bind.execute(sa.select(rollbacks.c.id, rollbacks.c.body)).all():
        body = json.loads(row.body)
        bind.execute(
            rollbacks.update()
            .where(rollbacks.c.id == row.id)
            .values(
                target_snapshot_id=body.get("target_snapshot_id"),
                pre_snapshot_id=body.get("pre_snapshot_id"),
            )
        )
    op.create_index("ix_rollbacks_open", "rollbacks", ["deployment", "status"])


def downgrade() -> None:
    op.drop_index("ix_rollbacks_open", "rollbacks")
    with op.batch_alter_table("rollbacks") as batch:
        batch.drop_column("pre_snapshot_id")
        batch.drop_column("target_snapshot_id")
