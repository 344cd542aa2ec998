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
    """Back to one upserted row per (deployment, variant, second) and one per histogram bucket:
    the delta rows are summed (revisions and replicas together, as 0005 kept them)."""
    observations = op.create_table(
        "observations",
        sa.Column("deployment", sa.String(256), primary_key=True),
        sa.Column("variant", sa.String(16), primary_key=True),
        sa.Column("second", BigInt, primary_key=True, autoincrement=False),
        sa.Column("requests", BigInt, nullable=False),
        sa.Column("errors", BigInt, nullable=False),
        sa.Column("latency_sum_ms", sa.Float, nullable=False),
        sa.Column("latency_max_ms", sa.Float, nullable=False),
    )
    buckets = op.create_table(
        "observation_buckets",
        sa.Column("deployment", sa.String(256), primary_key=True),
        sa.Column("variant", sa.String(16), primary_key=True),
        sa.Column("second", BigInt, primary_key=True, autoincrement=False),
        sa.Column("bucket", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("count", BigInt, nullable=False),
    )
    totals: dict[tuple[str, str, int], list[float]] = {}
    histograms: dict[tuple[str, str, int], dict[int, int]] = defaultdict(dict)
    for (
        deployment,
        variant,
        second,
        requests,
        errors,
        latency_sum,
        latency_max,
        histogram,
    ) in op.get_bind().execute(
        sa.text(
            "SELECT deployment, variant, second, requests, errors, latency_sum_ms, "
            "latency_max_ms, histogram FROM observation_rollups"
        )
    ):
        key = (deployment, variant, second)
        total = totals.setdefault(key, [0, 0, 0.0, 0.0])
        total[0] += requests
        total[1] += errors
        total[2] += latency_sum
        total[3] = max(total[3], latency_max)
        merged = histograms[key]
        for bucket, count in json.loads(histogram).items():
            merged[int(bucket)] = merged.get(int(bucket), 0) + count
    if totals:
        op.bulk_insert(
            observations,
            [
                {
                    "deployment": d,
                    "variant": v,
                    "second": s,
                    "requests": int(t[0]),
                    "errors": int(t[1]),
                    "latency_sum_ms": t[2],
                    "latency_max_ms": t[3],
                }
                for (d, v, s), t in totals.items()
            ],
        )
    rows = [
        {"deployment": d, "variant": v, "second": s, "bucket": b, "count": c}
        for (d, v, s), merged in histograms.items()
        for b, c in merged.items()
    ]
    if rows:
        op.bulk_insert(buckets, rows)
    op.drop_table("observation_rollups")
