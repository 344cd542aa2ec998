"""Rollback records in SQL, and the spec's rollback metrics computed from them."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from canaryguard.adapters.store.schema import rollbacks
from canaryguard.domain.models import (
    RollbackKind,
    RollbackMetrics,
    RollbackMode,
    RollbackRecord,
    RollbackStatus,
)

__all__ = ["OPEN_STATUSES", "SqlRollbackRepo"]

OPEN_STATUSES = (RollbackStatus.PENDING.value, RollbackStatus.RUNNING.value)
_EXECUTED = (RollbackStatus.COMPLETED.value, RollbackStatus.FAILED.value)


def _columns(record: RollbackRecord) -> dict[str, object]:
    return {
        "deployment": record.deployment,
        "kind": record.kind.value,
        "status": record.status.value,
        "created_at": record.created_at,
        "finished_at": record.finished_at,
        "duration_ms": record.duration_ms,
        "body": record.model_dump_json(),
        "target_snapshot_id": record.target_snapshot_id or None,
        "pre_snapshot_id": record.pre_snapshot_id,
    }


# Built once: both are on every rollback's path.
_INSERT = rollbacks.insert()
_OPEN_FOR = sa.select(rollbacks.c.body).where(
    rollbacks.c.deployment == sa.bindparam("deployment"), rollbacks.c.status.in_(OPEN_STATUSES)
)


class SqlRollbackRepo:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def insert(self, record: RollbackRecord) -> None:
        await self._conn.execute(_INSERT, {"id": record.id, **_columns(record)})

    async def update(self, record: RollbackRecord) -> None:
        await self._conn.execute(
            rollbacks.update().where(rollbacks.c.id == record.id).values(**_columns(record))
        )

    async def get(self, rollback_id: str) -> RollbackRecord | None:
        query = sa.select(rollbacks.c.body).where(rollbacks.c.id == rollback_id)
        body = (await self._conn.execute(query)).scalar_one_or_none()
        return RollbackRecord.model_validate_json(body) if body is not None else None

    async def find(
        self, *, deployment: str | None = None, limit: int = 100
    ) -> list[RollbackRecord]:
        query = sa.select(rollbacks.c.body).order_by(rollbacks.c.created_at.desc()).limit(limit)
        if deployment is not None:
            query = query.where(rollbacks.c.deployment == deployment)
        return [
            RollbackRecord.model_validate_json(body)
            for body in (await self._conn.execute(query)).scalars()
        ]

    async def open_for(self, deployment: str) -> list[RollbackRecord]:
        return [
            RollbackRecord.model_validate_json(body)
            for body in (await self._conn.execute(_OPEN_FOR, {"deployment": deployment})).scalars()
        ]

    async def pending(self) -> list[RollbackRecord]:
        query = sa.select(rollbacks.c.body).where(
            rollbacks.c.status == RollbackStatus.PENDING.value
        )
        return [
            RollbackRecord.model_validate_json(body)
            for body in (await self._conn.execute(query)).scalars()
        ]

    async def running_staged(self) -> list[RollbackRecord]:
        query = sa.select(rollbacks.c.body).where(
            rollbacks.c.status == RollbackStatus.RUNNING.value
        )
        records = [
            RollbackRecord.model_validate_json(body)
            for body in (await self._conn.execute(query)).scalars()
        ]
        return [r for r in records if r.mode is RollbackMode.STAGED]

    async def counts_by_deployment(self) -> dict[tuple[str, RollbackKind, RollbackStatus], int]:
        c = rollbacks.c
        query = sa.select(c.deployment, c.kind, c.status, sa.func.count()).group_by(
            c.deployment, c.kind, c.status
        )
        return {
            (deployment, RollbackKind(kind), RollbackStatus(status)): int(n)
            for deployment, kind, status, n in await self._conn.execute(query)
        }

    async def counts(self) -> dict[tuple[RollbackKind, RollbackStatus], int]:
        query = sa.select(rollbacks.c.kind, rollbacks.c.status, sa.func.count()).group_by(
            rollbacks.c.kind, rollbacks.c.status
        )
        return {
            (RollbackKind(kind), RollbackStatus(status)): int(n)
            for kind, status, n in await self._conn.execute(query)
        }

    async def metrics(self, *, deployment: str | None = None) -> RollbackMetrics:
        def count_where(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
            return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

        completed = rollbacks.c.status == RollbackStatus.COMPLETED.value
        query = sa.select(
            sa.func.count(),
            count_where(rollbacks.c.kind == RollbackKind.AUTO.value),
            count_where(rollbacks.c.kind == RollbackKind.MANUAL.value),
            count_where(completed),
            count_where(rollbacks.c.status == RollbackStatus.FAILED.value),
            sa.func.avg(sa.case((completed, rollbacks.c.duration_ms), else_=None)),
            sa.func.max(rollbacks.c.finished_at),
        ).where(rollbacks.c.status.in_(_EXECUTED))
        if deployment is not None:
            query = query.where(rollbacks.c.deployment == deployment)
        total, auto, manual, ok, failed, avg, last = (await self._conn.execute(query)).one()
        return RollbackMetrics(
            total_rollbacks=total,
            auto_rollbacks=auto,
            manual_rollbacks=manual,
            successful_rollbacks=ok,
            failed_rollbacks=failed,
            avg_rollback_duration_ms=float(avg) if avg is not None else None,
            last_rollback_time=last,
        )
