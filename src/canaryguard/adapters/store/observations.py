"""Per-second observation rollups in SQL, merged with an upsert."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from canaryguard.adapters.store.schema import observation_batches, observation_buckets, observations
from canaryguard.domain.assignment import Variant
from canaryguard.domain.models import Observation, VariantMetrics

__all__ = ["SqlObservationRepo"]


# Built once: every snapshot summarises the window.
_SUMMARY = (
    sa.select(
        observations.c.variant,
        sa.func.sum(observations.c.requests),
        sa.func.sum(observations.c.errors),
        sa.func.sum(observations.c.latency_sum_ms),
        sa.func.max(observations.c.latency_max_ms),
    )
    .where(
        observations.c.deployment == sa.bindparam("deployment"),
        observations.c.second >= sa.bindparam("since"),
        observations.c.second <= sa.bindparam("until"),
    )
    .group_by(observations.c.variant)
)


def _upserts(dialect: str) -> tuple[sa.Executable, sa.Executable]:
    """The two merge statements (per-second counts; histogram buckets) for ``dialect``."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    counts = insert(observations)
    counts = counts.on_conflict_do_update(
        index_elements=[observations.c.deployment, observations.c.variant, observations.c.second],
        set_={
            "requests": observations.c.requests + counts.excluded.requests,
            "errors": observations.c.errors + counts.excluded.errors,
            "latency_sum_ms": observations.c.latency_sum_ms + counts.excluded.latency_sum_ms,
            "latency_max_ms": sa.case(
                (
                    counts.excluded.latency_max_ms > observations.c.latency_max_ms,
                    counts.excluded.latency_max_ms,
                ),
                else_=observations.c.latency_max_ms,
            ),
        },
    )
    buckets = insert(observation_buckets)
    buckets = buckets.on_conflict_do_update(
        index_elements=[
            observation_buckets.c.deployment,
            observation_buckets.c.variant,
            observation_buckets.c.second,
            observation_buckets.c.bucket,
        ],
        set_={"count": observation_buckets.c.count + buckets.excluded.count},
    )
    return counts, buckets


_UPSERTS = {dialect: _upserts(dialect) for dialect in ("sqlite", "postgresql")}


class SqlObservationRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add_many(self, batch: Sequence[Observation]) -> None:
        """Merge per-second aggregates: counts add up, the maximum is kept, buckets add up."""
        if not batch:
            return
        counts, buckets = _UPSERTS[self._conn.dialect.name]
        await self._conn.execute(
            counts,
            [
                {
                    "deployment": o.deployment,
                    "variant": o.variant.value,
                    "second": o.second,
                    "requests": o.requests,
                    "errors": o.errors,
                    "latency_sum_ms": o.latency_sum_ms,
                    "latency_max_ms": o.latency_max_ms,
                }
                for o in batch
            ],
        )
        rows = [
            {
                "deployment": o.deployment,
                "variant": o.variant.value,
                "second": o.second,
                "bucket": bucket,
                "count": count,
            }
            for o in batch
            for bucket, count in o.histogram.items()
            if count
        ]
        if rows:
            await self._conn.execute(buckets, rows)

    async def first_time(self, batch_id: str, *, at: datetime) -> bool:
        """Record ``batch_id``; False when it was recorded before (a retried batch)."""
        insert = postgresql.insert if self._conn.dialect.name == "postgresql" else sqlite.insert
        # RETURNING, not rowcount: psycopg reports -1 for this INSERT through SQLAlchemy
        statement = (
            insert(observation_batches)
            .on_conflict_do_nothing()
            .returning(observation_batches.c.batch_id)
        )
        result = await self._conn.execute(statement, {"batch_id": batch_id, "received_at": at})
        return result.first() is not None

    async def forget_batches(self, *, before: datetime) -> None:
        await self._conn.execute(
            observation_batches.delete().where(observation_batches.c.received_at < before)
        )

    async def summarize(
        self, deployment: str, *, since_second: int, until_second: int
    ) -> dict[Variant, VariantMetrics]:
        params = {"deployment": deployment, "since": since_second, "until": until_second}
        return {
            Variant(variant): VariantMetrics(
                requests=int(requests),
                errors=int(errors),
                latency_sum_ms=float(latency_sum),
                latency_max_ms=float(latency_max),
            )
            for variant, requests, errors, latency_sum, latency_max in await self._conn.execute(
                _SUMMARY, params
            )
        }
