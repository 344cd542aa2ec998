"""The initial schema: policies, deployments, snapshots, rollbacks, events, audit, observations.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from canaryguard.adapters.store.schema import BigInt, UTCDateTime
from canaryguard.domain.audit import GENESIS_HASH

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_versions",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("content_hash", sa.String(80), nullable=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.UniqueConstraint("name", "content_hash", name="uq_policy_versions_hash"),
        sa.UniqueConstraint("name", "seq", name="uq_policy_versions_seq"),
    )
    op.create_table(
        "policy_schemas",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("schema", sa.Text, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
    )
    op.create_table(
        "deployments",
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("revision", BigInt, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_table(
        "snapshots",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("deployment", sa.String(256), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("revision", BigInt, nullable=False),
        sa.Column("pinned", sa.Boolean, nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("blob", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("deployment", "seq", name="uq_snapshots_deployment_seq"),
    )
    op.create_table(
        "rollbacks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("deployment", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        sa.Column("duration_ms", sa.Float, nullable=True),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_rollbacks_deployment", "rollbacks", ["deployment"])
    op.create_table(
        "event_log",
        sa.Column("seq", BigInt, primary_key=True, autoincrement=True),
        sa.Column("deployment", sa.String(256), nullable=True),
        sa.Column("type", sa.String(96), nullable=False),
        sa.Column("time", UTCDateTime, nullable=False),
        sa.Column("revision", BigInt, nullable=True),
        sa.Column("data", sa.Text, nullable=False),
    )
    op.create_index("ix_event_log_deployment", "event_log", ["deployment"])
    op.create_table(
        "audit_log",
        sa.Column("seq", BigInt, primary_key=True, autoincrement=False),
        sa.Column("time", UTCDateTime, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("deployment", sa.String(256), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("revision_before", BigInt, nullable=True),
        sa.Column("revision_after", BigInt, nullable=True),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(80), nullable=False),
        sa.Column("hash", sa.String(80), nullable=False),
    )
    op.create_index("ix_audit_log_deployment", "audit_log", ["deployment"])
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", BigInt, nullable=False),
        sa.Column("hash", sa.String(80), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS_HASH}])
    op.create_table(
        "observations",
        sa.Column("deployment", sa.String(256), primary_key=True),
        sa.Column("variant", sa.String(16), primary_key=True),
        sa.Column("second", BigInt, primary_key=True, autoincrement=False),
        sa.Column("requests", BigInt, nullable=False),
        sa.Column("errors", BigInt, nullable=False),
        sa.Column("latency_sum_ms", sa.Float, nullable=False),
        sa.Column("latency_max_ms", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "observations",
        "audit_head",
        "audit_log",
        "event_log",
        "rollbacks",
        "snapshots",
        "deployments",
        "policy_schemas",
        "policy_versions",
    ):
        op.drop_table(table)
