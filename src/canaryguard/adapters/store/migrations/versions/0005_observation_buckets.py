"""Latency histograms per observed second, and the ids of observation batches already merged.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from canaryguard.adapters.store.schema import BigInt, UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "observation_buckets",
        sa.Column("deployment", sa.String(256), primary_key=True),
        sa.Column("variant", sa.String(16), primary_key=True),
        sa.Column("second", BigInt, primary_key=True, autoincrement=False),
        sa.Column("bucket", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("count", BigInt, nullable=False),
    )
    op.create_table(
        "observation_batches",
        sa.Column("batch_id", sa.String(64), primary_key=True),
        sa.Column("received_at", UTCDateTime, nullable=False, index=True),
    )


def downgrade() -> None:
    op.drop_table("observation_batches")
    op.drop_table("observation_buckets")
