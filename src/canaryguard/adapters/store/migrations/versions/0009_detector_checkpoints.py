"""Detector checkpoints: each running canary's evidence, so a restart or a new leader resumes it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from canaryguard.adapters.store.schema import BigInt, UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "detector_checkpoints",
        sa.Column("run", sa.String(64), primary_key=True),
        sa.Column("deployment", sa.String(256), nullable=False),
        sa.Column("next_second", BigInt, nullable=False),
        sa.Column("saved_at", UTCDateTime, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("detector_checkpoints")
