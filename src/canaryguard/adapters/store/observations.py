"""Per-second observation rollups in SQL, merged with an upsert."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from canaryguard.adapters.store.schema import observations
from canaryguard.domain.assignment import Variant
from canaryguard.domain.models import VariantMetrics

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


class SqlObservationRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(
        self,
        deployment: str,
        variant: Variant,
        *,
        second: int,
        requests: int,
        errors: int,
        latency_sum_ms: float,
        latency_max_ms: float,
    ) -> None:
        insert = postgresql.insert if self._conn.dialect.name == "postgresql" else sqlite.insert
        statement = insert(observations).values(
            deployment=deployment,
            variant=variant.value,
            second=second,
            requests=requests,
            errors=errors,
            latency_sum_ms=latency_sum_ms,
            latency_max_ms=latency_max_ms,
        )
        excluded = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=[
                observations.c.deployment,
                observations.c.variant,
                observations.c.second,
            ],
            set_={
                "requests": observations.c.requests + excluded.requests,
                "errors": observations.c.errors + excluded.errors,
                "latency_sum_ms": observations.c.latency_sum_ms + excluded.latency_sum_ms,
                "latency_max_ms": sa.case(
                    (
                        excluded.latency_max_ms > observations.c.latency_max_ms,
                        excluded.latency_max_ms,
                    ),
                    else_=observations.c.latency_max_ms,
                ),
            },
        )
        await self._conn.execute(statement)

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
