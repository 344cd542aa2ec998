"""Notification cursors: the last event each notification channel has dealt with.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from canaryguard.adapters.store.schema import BigInt, UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_cursors",
        sa.Column("channel", sa.String(64), primary_key=True),
        sa.Column("last_seq", BigInt, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("notification_cursors")
