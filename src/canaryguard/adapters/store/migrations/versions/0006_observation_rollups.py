"""Per-second observations as appended delta rows with revision and histogram in one row.

The upserted ``observations`` and ``observation_buckets`` tables made ingestion write one row
per histogram bucket; the rollup keeps one row per (deployment, revision, variant, second) and
flush, appended by the replica that merged it. Existing rows are carried over (revision 0: not
known).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import json
from collections import defaultdict

import sqlalchemy as sa
from alembic import op

from canaryguard.adapters.store.schema import BigInt

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    rollups = op.create_table(
        "observation_rollups",
        sa.Column("id", BigInt, primary_key=True, autoincrement=True),
        sa.Column("deployment", sa.String(256), nullable=False),
        sa.Column("revision", BigInt, nullable=False),
        sa.Column("variant", sa.String(16), nullable=False),
        sa.Column("second", BigInt, nullable=False),
        sa.Column("requests", BigInt, nullable=False),
        sa.Column("errors", BigInt, nullable=False),
        sa.Column("latency_sum_ms", sa.Float, nullable=False),
        sa.Column("latency_max_ms", sa.Float, nullable=False),
        sa.Column("histogram", sa.Text, nullable=False),
        sa.Column("node", sa.String(32), nullable=False),
    )
    op.create_index(
        "ix_observation_rollups_deployment_second", "observation_rollups", ["deployment", "second"]
    )
    op.create_index("ix_observation_rollups_second", "observation_rollups", ["second"])
    bind = op.get_bind()
    histograms: dict[tuple[str, str, int], dict[str, int]] = defaultdict(dict)
    for deployment, variant, second, bucket, count in bind.execute(
        sa.text("SELECT deployment, variant, second, bucket, count FROM observation_buckets")
    ):
        histograms[(deployment, variant, second)][str(bucket)] = count
    rows = [
        {
            "deployment": deployment,
            "revision": 0,
            "variant": variant,
            "second": second,
            "requests": requests,
            "errors": errors,
            "latency_sum_ms": latency_sum,
            "latency_max_ms": latency_max,
            "histogram": json.dumps(histograms.get((deployment, variant, second), {})),
            "node": "migrated",
        }
        for deployment, variant, second, requests, errors, latency_sum, latency_max in bind.execute(
            sa.text(
                "SELECT deployment, variant, second, requests, errors, latency_sum_ms, "
                "latency_max_ms FROM observations"
            )
        )
    ]
    if rows:
        op.bulk_insert(rollups, rows)
    op.drop_table("observation_buckets")
    op.drop_table("observations")


def downgrade() -> None:
    raise NotImplementedError("0006 is not reversible: restore the database from a backup")
