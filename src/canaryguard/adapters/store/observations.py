"""Per-second observation rollups in SQL: appended delta rows, summed when read."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from canaryguard.adapters.store.schema import (
    insert_on_conflict,
    observation_batches,
    observation_nodes,
    observation_rollups,
)
from canaryguard.domain.assignment import Variant
from canaryguard.domain.windows import RollupKey, SecondStats

__all__ = ["SqlObservationRepo"]

_R = observation_rollups.c
_APPEND_COLUMNS = (
    "deployment, revision, variant, second, requests, errors, latency_sum_ms, latency_max_ms, "
    "histogram, node, flush_seq"
)
_SELECT = sa.select(
    _R.deployment,
    _R.revision,
    _R.variant,
    _R.second,
    _R.requests,
    _R.errors,
    _R.latency_sum_ms,
    _R.latency_max_ms,
    _R.histogram,
)
_SINCE = _SELECT.where(_R.second >= sa.bindparam("second"))
_FLUSHED = _SELECT.where(
    _R.node == sa.bindparam("node"),
    _R.flush_seq > sa.bindparam("after"),
    _R.flush_seq <= sa.bindparam("upto"),
)
_SEEN = sa.select(observation_batches.c.batch_id).where(
    observation_batches.c.batch_id == sa.bindparam("batch_id")
)


def _rollups(result: Iterable[Any]) -> list[tuple[RollupKey, SecondStats]]:
    return [
        (
            (deployment, revision, Variant(variant), second),
            SecondStats(
                requests=requests,
                errors=errors,
                latency_sum_ms=latency_sum,
                latency_max_ms=latency_max,
                histogram={int(b): int(c) for b, c in json.loads(histogram).items()},
            ),
        )
        for (
            deployment,
            revision,
            variant,
            second,
            requests,
            errors,
            latency_sum,
            latency_max,
            histogram,
        ) in result
    ]


class SqlObservationRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def append(
        self,
        rows: Sequence[tuple[RollupKey, SecondStats]],
        *,
        node: str,
        flush_seq: int,
        at: datetime,
    ) -> None:
        if rows:
            # positional rows through the driver: SQLAlchemy's per-row parameter processing was
            # most of the flush's cost (a flush writes one row per key merged in that second)
            mark = "?" if self._conn.dialect.paramstyle == "qmark" else "%s"
            await self._conn.exec_driver_sql(
                f"INSERT INTO observation_rollups ({_APPEND_COLUMNS}) "  # noqa: S608 - constants
                f"VALUES ({', '.join([mark] * 11)})",
                [
                    (
                        deployment,
                        revision,
                        variant.value,
                        second,
                        stats.requests,
                        stats.errors,
                        stats.latency_sum_ms,
                        stats.latency_max_ms,
                        json.dumps(stats.histogram, separators=(",", ":")),
                        node,
                        flush_seq,
                    )
                    for (deployment, revision, variant, second), stats in rows
                ],
            )
        statement = insert_on_conflict(self._conn, observation_nodes).values(
            node=node, flush_seq=flush_seq, flushed_at=at
        )
        await self._conn.execute(
            statement.on_conflict_do_update(
                index_elements=[observation_nodes.c.node],
                set_={"flush_seq": flush_seq, "flushed_at": at},
            )
        )

    async def since(self, *, second: int) -> list[tuple[RollupKey, SecondStats]]:
        return _rollups(await self._conn.execute(_SINCE, {"second": second}))

    async def nodes(self) -> dict[str, int]:
        result = await self._conn.execute(
            sa.select(observation_nodes.c.node, observation_nodes.c.flush_seq)
        )
        return {str(node): int(seq) for node, seq in result}

    async def flushed(
        self, node: str, *, after: int, upto: int
    ) -> list[tuple[RollupKey, SecondStats]]:
        return _rollups(
            await self._conn.execute(_FLUSHED, {"node": node, "after": after, "upto": upto})
        )

    async def forget_nodes(self, *, before: datetime) -> None:
        await self._conn.execute(
            observation_nodes.delete().where(observation_nodes.c.flushed_at < before)
        )

    async def seen_batch(self, batch_id: str) -> bool:
        return (await self._conn.execute(_SEEN, {"batch_id": batch_id})).first() is not None

    async def remember_batches(self, batch_ids: Sequence[str], *, at: datetime) -> None:
        if not batch_ids:
            return
        await self._conn.execute(
            insert_on_conflict(self._conn, observation_batches).on_conflict_do_nothing(),
            [{"batch_id": batch_id, "received_at": at} for batch_id in batch_ids],
        )

    async def forget_batches(self, *, before: datetime) -> None:
        await self._conn.execute(
            observation_batches.delete().where(observation_batches.c.received_at < before)
        )

    async def prune(self, *, before_second: int) -> int:
        result = await self._conn.execute(
            observation_rollups.delete().where(_R.second < before_second)
        )
        return result.rowcount
