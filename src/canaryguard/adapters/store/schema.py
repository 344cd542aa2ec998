"""Tables of the SQL store (SQLite and PostgreSQL). Alembic migrations create them.

Records whose shape is owned by the domain (deployments, rollbacks, event data) are kept whole
as JSON text in ``body`` next to the few columns that queries filter or order on, so a new
domain field needs no migration and the stored JSON is exactly what the model wrote.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = [
    "UTCDateTime",
    "api_tokens",
    "audit_head",
    "audit_log",
    "controller_leases",
    "deployments",
    "detector_checkpoints",
    "event_log",
    "insert_on_conflict",
    "metadata",
    "notification_cursors",
    "observation_batches",
    "observation_nodes",
    "observation_rollups",
    "policy_schemas",
    "policy_versions",
    "rollbacks",
    "snapshots",
]


def insert_on_conflict(conn: AsyncConnection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into ``table`` that can say what a conflict does (``on_conflict_do_nothing``,
    ``on_conflict_do_update``), in the dialect of ``conn``: both backends spell it alike."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes with microseconds on every backend.

    SQLite has no time zone type, and PostgreSQL returns ``timestamptz`` in the session's zone;
    both come back here as UTC, so a value read back equals the value written.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; pass a UTC-aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:  # noqa: ARG002
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

policy_versions = sa.Table(
    "policy_versions",
    metadata,
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

policy_schemas = sa.Table(
    "policy_schemas",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("schema", sa.Text, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("updated_by", sa.String(128), nullable=False),
)

deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("revision", BigInt, nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
)

snapshots = sa.Table(
    "snapshots",
    metadata,
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

rollbacks = sa.Table(
    "rollbacks",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("deployment", sa.String(256), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.Column("duration_ms", sa.Float, nullable=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("target_snapshot_id", sa.String(64), nullable=True),
    sa.Column("pre_snapshot_id", sa.String(64), nullable=True),
    sa.Index("ix_rollbacks_open", "deployment", "status"),
)

event_log = sa.Table(
    "event_log",
    metadata,
    sa.Column("seq", BigInt, primary_key=True, autoincrement=True),
    sa.Column("deployment", sa.String(256), nullable=True, index=True),
    sa.Column("type", sa.String(96), nullable=False),
    sa.Column("time", UTCDateTime, nullable=False),
    sa.Column("revision", BigInt, nullable=True),
    sa.Column("data", sa.Text, nullable=False),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", BigInt, primary_key=True, autoincrement=False),
    sa.Column("time", UTCDateTime, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("deployment", sa.String(256), nullable=True, index=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("revision_before", BigInt, nullable=True),
    sa.Column("revision_after", BigInt, nullable=True),
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(80), nullable=False),
    sa.Column("hash", sa.String(80), nullable=False),
)

# One row: the last audit record's seq and hash. Every write transaction locks it first, which
# serialises writers (so event and audit order is commit order) and lets verify catch a log
# whose tail was cut off.
audit_head = sa.Table(
    "audit_head",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("seq", BigInt, nullable=False),
    sa.Column("hash", sa.String(80), nullable=False),
)

# Per-second outcomes, appended as deltas (one row per key and flush; several replicas and late
# reports add rows for the same second), summed when read. ``revision`` 0: not named by the client.
observation_rollups = sa.Table(
    "observation_rollups",
    metadata,
    sa.Column("id", BigInt, primary_key=True, autoincrement=True),
    sa.Column("deployment", sa.String(256), nullable=False),
    sa.Column("revision", BigInt, nullable=False),
    sa.Column("variant", sa.String(16), nullable=False),
    sa.Column("second", BigInt, nullable=False),
    sa.Column("requests", BigInt, nullable=False),
    sa.Column("errors", BigInt, nullable=False),
    sa.Column("latency_sum_ms", sa.Float, nullable=False),
    sa.Column("latency_max_ms", sa.Float, nullable=False),
    sa.Column("histogram", sa.Text, nullable=False),  # JSON {"bucket": count}
    sa.Column("node", sa.String(32), nullable=False),
    # the writing replica's flush number (null on rows from before migration 0008)
    sa.Column("flush_seq", BigInt, nullable=True),
    sa.Index("ix_observation_rollups_deployment_second", "deployment", "second"),
    sa.Index("ix_observation_rollups_second", "second"),
    sa.Index("ix_observation_rollups_node_flush", "node", "flush_seq"),
)

# Each replica's last committed flush, written in the flush's own transaction: another replica
# that reads a number here can read every row of that replica up to it (migration 0008).
observation_nodes = sa.Table(
    "observation_nodes",
    metadata,
    sa.Column("node", sa.String(32), primary_key=True),
    sa.Column("flush_seq", BigInt, nullable=False),
    sa.Column("flushed_at", UTCDateTime, nullable=False),
)

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("digest", sa.String(80), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.String(128), nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

# The controller lease: the one replica that runs the monitor and the rollback executor, and the
# fencing token (epoch) it acts under; a replica that takes over an expired lease bumps it.
controller_leases = sa.Table(
    "controller_leases",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("epoch", BigInt, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)

# Each running canary's detector as the monitor last saved it (JSON in ``body``), so a process
# that takes the run over resumes its evidence; rows of runs that ended are pruned.
detector_checkpoints = sa.Table(
    "detector_checkpoints",
    metadata,
    sa.Column("run", sa.String(64), primary_key=True),
    sa.Column("deployment", sa.String(256), nullable=False),
    sa.Column("next_second", BigInt, nullable=False),
    sa.Column("saved_at", UTCDateTime, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
)

# Per notification channel, the last event it has dealt with (sent, or given up on), so a
# restart or a new leader carries on where the channel stopped instead of sending it all again.
notification_cursors = sa.Table(
    "notification_cursors",
    metadata,
    sa.Column("channel", sa.String(64), primary_key=True),
    sa.Column("last_seq", BigInt, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# Batch ids already merged, so a client that retries a batch is not counted twice.
observation_batches = sa.Table(
    "observation_batches",
    metadata,
    sa.Column("batch_id", sa.String(64), primary_key=True),
    sa.Column("received_at", UTCDateTime, nullable=False, index=True),
)
